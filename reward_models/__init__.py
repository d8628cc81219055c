"""Reward models: the margin loss, training stage, scoring, evaluation and comparison reports."""
