"""Training and scoring machinery: trainer, optimiser, averaging, inference, torchrun."""
