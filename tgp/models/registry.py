"""Model registry: name -> constructor, and the Hydra entry point :func:`build_model`.

Every registered constructor has the signature
``fn(num_classes: int, in_channels: int = 3, width: int | None = None, **kwargs) -> nn.Module``
where ``width=None`` means the architecture's standard width.

Every model follows one interface:

* ``forward_features(x) -> Tensor[B, D]``: penultimate features after global pooling;
* ``fc: nn.Linear``: the classifier, with ``fc.in_features == D``;
* ``forward(x) == fc(forward_features(x))``;
* attributes ``arch`` (registry name) and ``num_classes``.
"""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from tgp.errors import ConfigError

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a model constructor under ``name``."""

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = fn
        return fn

    return decorator


def available_models() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(MODELS)


def build_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    width: int | None = None,
    **kwargs,
) -> nn.Module:
    """Build the registered model ``name``.

    Used as a Hydra ``_target_``; ``num_classes`` and ``in_channels`` are usually passed at
    instantiate time from the data module.
    """
    if name not in MODELS:
        raise ConfigError(
            "model.name",
            name,
            "is not a known model.",
            f"use one of: {', '.join(available_models())}.",
        )
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(
            "num_classes", num_classes, "must be a positive integer.", "pass the dataset's class count."
        )
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
        raise ConfigError(
            "in_channels", in_channels, "must be a positive integer.", "use 3 for RGB images or 1 for grayscale."
        )
    if width is not None and (not isinstance(width, int) or isinstance(width, bool) or width < 1):
        raise ConfigError(
            "model.width",
            width,
            "must be a positive integer or null.",
            "set e.g. model.width=64, or null for the standard width.",
        )
    ctor = MODELS[name]
    params = inspect.signature(ctor).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            accepted = sorted(set(params) - {"num_classes", "in_channels", "width"})
            raise ConfigError(
                f"model.{unknown[0]}",
                kwargs[unknown[0]],
                f"is not an option of model {name!r}.",
                f"remove it; {name} accepts only name, width" + (f", {', '.join(accepted)}" if accepted else "") + ".",
            )
    model = ctor(num_classes=num_classes, in_channels=in_channels, width=width, **kwargs)
    model.arch = name
    model.num_classes = num_classes
    return model
