"""Training with PyTorch Lightning: data preparation, the module, the runner."""
