"""Method pipelines: ``method.name`` → a function ``(StageRunner) -> name of the final stage``."""

from __future__ import annotations

from collections.abc import Callable

from tgp.errors import ConfigError
from tgp.methods.tgp import run_tgp

METHODS: dict[str, Callable] = {"tgp": run_tgp}


def get_method(name: str) -> Callable:
    if name not in METHODS:
        raise ConfigError("method", name, "no such method.", f"use one of: {', '.join(sorted(METHODS))}.")
    return METHODS[name]
