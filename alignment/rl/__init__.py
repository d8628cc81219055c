"""Reinforcement-learning pieces of the Llama 2-Chat pipeline (PPO; docs/design.md).

`functional` holds the pure tensor math (KL penalty, GAE, clipped losses, whitening) so the PPO
stage can stay about orchestration and the math can be tested on hand-worked numbers.
"""
