"""Every setting checked before the first stage runs: one-paragraph errors (setting, value, fix), exit 2."""

from __future__ import annotations

from omegaconf import DictConfig

from tgp.errors import ConfigError
from tgp.pruning.mask import prunable_parameters


def validate_job(cfg: DictConfig, spec, dm, student) -> None:
    """Checks that need the composed config, the method's spec, the datamodule and an instantiated student."""
    spec.check_settings(cfg.method)
    prunable_parameters(student, list(cfg.pruning.exclude))  # raises on a pattern that matches nothing
    if cfg.pruning.get("mask") and not spec.accepts_mask:
        from tgp.methods import load_all

        accepting = [n for n, s in sorted(load_all().items()) if s.accepts_mask]
        raise ConfigError("pruning.mask", cfg.pruning.mask, f"method {spec.name} computes its own masks.",
                          f"use pruning.mask with one of {', '.join(accepting)}, or drop it.")
