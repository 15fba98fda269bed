"""Methods: one file per method family, each registering a :class:`~tgp.methods.registry.MethodSpec`.

No method file imports another: what several methods share lives in :mod:`tgp.blocks`
(stage builders), :mod:`tgp.pruning` (mask maths, schedules, callbacks), :mod:`tgp.lit`
(LightningModules) and :mod:`tgp.data` (views and samplers).
"""

from tgp.methods.registry import REGISTRY, MethodOutputs, MethodSpec, get_method, load_all, methods_for, register

__all__ = ["REGISTRY", "MethodOutputs", "MethodSpec", "get_method", "load_all", "methods_for", "register"]
