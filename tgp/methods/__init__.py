"""Method pipelines: ``method.name`` → a function ``(StageRunner) -> name of the final stage``.

Each entry is ``"module:function"``, imported on first use so a method's extra code costs
nothing to the others. Contract for every method: it leaves its final trained network at
``<run_dir>/<final_stage>/net.pt`` and its final mask at ``<run_dir>/prune/mask.pt``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from tgp.errors import ConfigError

METHODS: dict[str, str] = {
    "tgp": "tgp.methods.tgp:run_tgp",
    "magnitude": "tgp.methods.tgp:run_magnitude",
    "random": "tgp.methods.tgp:run_random",
    "ce_grad": "tgp.methods.tgp:run_ce_grad",
    "snip": "tgp.methods.at_init:run_snip",
    "epsd": "tgp.methods.at_init:run_epsd",
    "imp": "tgp.methods.iterative:run_imp",
    "colt": "tgp.methods.iterative:run_colt",
    "sdp": "tgp.methods.sdp:run_sdp",
}


def get_method(name: str) -> Callable:
    if name not in METHODS:
        raise ConfigError("method.name", name, "no such method.", f"use method=<name> with one of: {', '.join(METHODS)}.")
    module, func = METHODS[name].split(":")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError):
        raise ConfigError("method.name", name, "this method is not implemented yet in this version.",
                          "use one of the implemented methods, e.g. tgp.") from None
