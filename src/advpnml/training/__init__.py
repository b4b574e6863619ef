"""Training the base models: standard, Madry PGD and fast adversarial training, resumable and DDP-ready
(:mod:`~advpnml.training.trainer`), and the update step, eager or captured as a CUDA graph
(:mod:`~advpnml.training.step`)."""

from .trainer import METHODS, TrainConfig, train, validate

__all__ = ["METHODS", "TrainConfig", "train", "validate"]
