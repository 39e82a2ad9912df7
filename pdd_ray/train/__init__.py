"""Plain training loops shared by evaluation, coreset selection and expert training."""

from pdd_ray.train.loop import accuracy, make_sgd, resolve_device, seed_everything, train_epoch

__all__ = ["accuracy", "make_sgd", "resolve_device", "seed_everything", "train_epoch"]
