"""pdd-ray: Ray-distributed Progressive Dataset Distillation."""

__version__ = "0.1.0"
