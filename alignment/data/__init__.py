"""Preference, SFT and RL-prompt data: records, adapters, mixtures, chat formats."""
