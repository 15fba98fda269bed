"""The method registry: one :class:`MethodSpec` per method, declared in the method's own file.

Adding a method = one file in ``tgp/methods/`` that calls :func:`register`, and one config
``conf/method/<name>.yaml`` whose keys are the fields of its settings dataclass. Nothing else
lists methods: the pipeline, the checks, the report and the summary read these specs.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tgp.errors import ConfigError


@dataclass(frozen=True)
class MethodSpec:
    """What a method is.

    * ``run(job) -> final stage name``: runs the method's stages (see :mod:`tgp.stages`).
    * ``settings``: a dataclass, the schema of ``method.*`` besides ``name`` (None: no settings).
    * ``uses_teacher``: trains or loads the dense teacher (the report shows the ±KD variants).
    * ``accepts_mask``: ``pruning.mask=<file>`` may replace its score.
    * ``stages``: its stage names in order; a ``*`` stands for a round number (``imp_round_*``).
    * ``epochs``: config paths of the epoch counts its stages train for (each must be ≥ 1).
    * ``dense_stage``: the stage whose network is the dense student of the report, if any.
    * ``check(cfg, dm)``: the method's own setting checks, run before the first stage (raise ConfigError).
    * ``color``: the method's colour in the report's plots (a matplotlib colour; None: one from its name).
    """

    name: str
    run: Callable
    summary: str
    settings: type | None = None
    uses_teacher: bool = False
    accepts_mask: bool = False
    stages: tuple[str, ...] = ()
    epochs: tuple[str, ...] = ()
    dense_stage: str | None = None
    check: Callable | None = None
    color: str | None = None
    extra: dict = field(default_factory=dict)

    def has_stage(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern.replace("*", "[0-9]*")) for pattern in self.stages)

    def check_settings(self, method_cfg: DictConfig) -> None:
        """``method.*`` against the settings dataclass: unknown keys and wrong types are errors."""
        given = {k: v for k, v in OmegaConf.to_container(method_cfg, resolve=True).items() if k != "name"}
        if self.settings is None:
            if given:
                key = next(iter(given))
                raise ConfigError(f"method.{key}", given[key], f"method {self.name} has no settings.",
                                  f"drop method.{key}.")
            return
        known = {f.name for f in dataclasses.fields(self.settings)}
        for key, value in given.items():
            if key not in known:
                raise ConfigError(f"method.{key}", value, f"method {self.name} has no setting {key!r}.",
                                  f"use one of: {', '.join(sorted(known))}.")
        try:
            OmegaConf.merge(OmegaConf.structured(self.settings), given)
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or "?"
            raise ConfigError(f"method.{key}", given.get(key), f"wrong type ({type(e).__name__}).",
                              f"see conf/method/{self.name}.yaml for the expected type.") from None


REGISTRY: dict[str, MethodSpec] = {}
_NOT_METHODS = {"registry"}


def register(spec: MethodSpec) -> MethodSpec:
    if spec.name in REGISTRY and REGISTRY[spec.name].run is not spec.run:
        raise RuntimeError(f"method {spec.name!r} registered twice")
    REGISTRY[spec.name] = spec
    return spec


def load_all() -> dict[str, MethodSpec]:
    """Import every method file of ``tgp.methods`` (each registers its methods)."""
    import tgp.methods as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _NOT_METHODS and not info.name.startswith("_"):
            importlib.import_module(f"tgp.methods.{info.name}")
    return REGISTRY


def get_method(name: str) -> MethodSpec:
    methods = load_all()
    if name not in methods:
        raise ConfigError("method", name, "no such method.", f"use method=<name> with one of: {', '.join(sorted(methods))}.")
    return methods[name]
