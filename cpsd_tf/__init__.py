"""cpsd-tf: Complementary Parallel Self-Distillation for multi-label image classification."""

__version__ = "0.1.0"
