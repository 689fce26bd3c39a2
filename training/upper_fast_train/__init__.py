"""upper_fast_train: the PyTorch side of upper_fast (install with the [train] extra)."""
