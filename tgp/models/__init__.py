"""Model zoo: CIFAR-style ResNets and VGGs behind one registry.

Use :func:`build_model` (also the Hydra ``_target_`` of ``conf/model/*.yaml``).
"""

from tgp.models.registry import MODELS, available_models, build_model, register_model
from tgp.models import resnet as _resnet  # noqa: F401  (registers the ResNets)
from tgp.models import vgg as _vgg  # noqa: F401  (registers the VGGs)

__all__ = ["MODELS", "available_models", "build_model", "register_model"]
