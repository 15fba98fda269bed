"""The method registry: one :class:`MethodSpec` per method, declared in the method's own file.

Adding a method = one file in ``tgp/methods/`` that calls :func:`register`, and one config
``conf/method/<name>.yaml`` whose keys are the fields of its settings dataclass. Nothing else
lists methods: the pipeline, the checks, the report, the summary and the Table 2 script read these specs.

**One source for each setting.** A method's settings dataclass (``ImpSettings``, ``EpsdSettings``, ...)
is a typed schema *without default values*; ``conf/method/<name>.yaml`` holds the values, each with its
comment saying whether it is the paper's or ours. The values live in YAML and not in Python because
several are interpolations of other settings (``epochs_per_round: ${kd_pretrain.epochs}``,
``split_seed: ${seed}``), which only the composed config resolves, and because the provenance comment
belongs beside the value the user reads and overrides. The dataclass supplies what YAML cannot: the
type each value must have (:meth:`MethodSpec.check_settings`) and the list of keys that exist. A
default written in both places is caught by ``tests/test_configs.py``.
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
class MethodOutputs:
    """Where a finished method's results are: ``net_stage`` is the stage whose ``net.pt`` is the final
    network, ``mask_stage`` the stage whose ``mask.pt`` and ``sparsity_report.json`` are its final mask
    (see :meth:`tgp.job.Job.mask_path`). The pipeline copies both to the run folder and names them in
    ``metrics.json``."""

    net_stage: str
    mask_stage: str


@dataclass(frozen=True)
class MethodSpec:
    """What a method is.

    * ``run(job) -> MethodOutputs``: runs the method's stages (see :mod:`tgp.stages`).
    * ``settings``: a dataclass without defaults, the schema of ``method.*`` besides ``name`` (None: no
      settings); the values are in ``conf/method/<name>.yaml`` (see the module docstring).
    * ``uses_teacher``: trains or loads the dense teacher (the report shows the ±KD variants).
    * ``one_shot``: its mask comes from a one-shot prune stage (score → global threshold), so the
      sanity-check variants (``pruning.sanity``) and ``pruning.keep_class_rows`` apply to it.
    * ``accepts_mask``: ``pruning.mask=<file>`` may replace its score.
    * ``in_table2``: one of the methods the paper's main comparison (Table 2) runs
      (``experiments/reproduce_table2.py``).
    * ``stages``: its stage names in order; a ``*`` stands for a round number (``imp_round_*``).
    * ``epochs``: config paths of the epoch counts its stages train for (each must be ≥ 1).
    * ``dense_stage``: the stage whose network is the dense student of the report, if any.
    * ``check(cfg, dm)``: the method's own setting checks, run once before the job writes anything
      (by :func:`tgp.checks.validate_job`, after the shared checks; raise ConfigError).
    * ``data_check(dm) -> str | None``: why the method cannot run on this data (a sentence), or None — the
      method decides, from what the datamodule says of itself (``modality``, ``regression``,
      ``num_classes``); a refused job names the methods that can (:func:`methods_for`). None: any data.
    * ``prunes``: it makes a sparse network (False: the dense comparison, whose row says target sparsity 0).
    * ``variant(cfg) -> str | None``: a label for an ablation of the method that its metrics row carries
      (``variant``) so a report keeps it apart from the method (SDP with ``method.cc_weight=0``: ``λ=0``).
    * ``color``: the method's colour in the report's plots (a matplotlib colour; None: one from its name).
    """

    name: str
    run: Callable
    summary: str
    settings: type | None = None
    uses_teacher: bool = False
    one_shot: bool = False
    accepts_mask: bool = False
    in_table2: bool = False
    stages: tuple[str, ...] = ()
    epochs: tuple[str, ...] = ()
    dense_stage: str | None = None
    check: Callable | None = None
    data_check: Callable | None = None
    prunes: bool = True
    variant: Callable | None = None
    color: str | None = None
    extra: dict = field(default_factory=dict)

    def unsupported(self, dm) -> str | None:
        """Why this method cannot run on ``dm`` (:attr:`data_check`), or None."""
        return self.data_check(dm) if self.data_check is not None else None

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
        known = [f.name for f in dataclasses.fields(self.settings)]
        for key, value in given.items():
            if key not in known:
                raise ConfigError(f"method.{key}", value, f"method {self.name} has no setting {key!r}.",
                                  f"use one of: {', '.join(sorted(known))}.")
        for key in known:
            if key not in given:  # the schema has no defaults: conf/method/<name>.yaml gives every value
                raise ConfigError(f"method.{key}", None, f"method {self.name} needs this setting, and the method "
                                  f"config gives it no value.", f"set method.{key}, or restore it in "
                                  f"conf/method/{self.name}.yaml.")
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


def methods_for(dm) -> list[str]:
    """The methods that run on ``dm`` (no :attr:`MethodSpec.data_check` objection), sorted."""
    return [n for n, spec in sorted(load_all().items()) if spec.unsupported(dm) is None]


def get_method(name: str) -> MethodSpec:
    methods = load_all()
    if name not in methods:
        raise ConfigError("method", name, "no such method.", f"use method=<name> with one of: {', '.join(sorted(methods))}.")
    return methods[name]
