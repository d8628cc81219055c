"""The training loop every fine-tuning stage shares: schedule, checkpoints, resume, metrics."""
