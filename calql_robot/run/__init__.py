"""What a run writes and reads: run directory and metrics log, checkpoints, atomic writes,
disk space, videos, plots, the fine-tune source."""
