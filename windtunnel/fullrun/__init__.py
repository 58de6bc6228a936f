"""Carrying a sweep's winner to a target: the source proxy, target presets, hyperparameter carry-over,
the plan table and the launch of the full run."""
