"""Model zoo: CIFAR-style ResNets and VGGs, and Transformer sequence classifiers, behind one registry.

Use :func:`build_model` (also the Hydra ``_target_`` of ``conf/model/*.yaml``).
"""

from tgp.models.registry import MODELS, available_models, build_model, register_model
from tgp.models import resnet as _resnet  # noqa: F401  (registers the ResNets)
from tgp.models import vgg as _vgg  # noqa: F401  (registers the VGGs)
from tgp.models import text as _text  # noqa: F401  (registers the Transformers; transformers loads on first build)

__all__ = ["MODELS", "available_models", "build_model", "register_model"]
