"""Sweeps over the paper's ablations: one W&B-format file, run by Optuna, a local grid or W&B."""
