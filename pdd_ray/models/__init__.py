"""Networks: ConvNet and ResNet families behind one registry, plus a flat-parameter forward."""

from pdd_ray.models import convnet, resnet  # noqa: F401  (registers the models)
from pdd_ray.models.functional import FlatForward, ParamLayout, flatten_params, load_flat_, unflatten
from pdd_ray.models.factory import model_factory
from pdd_ray.models.registry import MODELS, create_model

__all__ = ["MODELS", "create_model", "model_factory", "FlatForward", "ParamLayout", "flatten_params", "load_flat_", "unflatten"]
