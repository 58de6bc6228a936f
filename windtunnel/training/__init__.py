"""Training: the one loop for proxies and full runs (`loop`), lr schedules, the optimizer, checkpoints,
distributed setup and metrics."""
