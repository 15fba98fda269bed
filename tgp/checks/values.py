"""The root config's own settings (``conf/config.yaml``: ``seed``, ``progress_bar``, ``verbose``, ``compile``,
``channels_last``, ``stop_after``, ...) have the type the code reads them as.

Hydra composes ``seed=abc`` without complaint (our YAML nodes are untyped), and the job would stop
in the middle of naming its run folder; here it is one paragraph before Hydra starts. Every value of
a swept key is checked (``-m seed=0,abc``), not only the one the composed job holds.
"""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig, ListConfig, OmegaConf

from tgp.errors import ConfigError


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _flag(v) -> bool:
    return isinstance(v, bool)


def _text(v) -> bool:
    return isinstance(v, str)


def _text_or_null(v) -> bool:
    return v is None or isinstance(v, str)


# key → (accepts, what it must be, an example)
TYPES: dict[str, tuple[Callable[[object], bool], str, str]] = {
    "name": (_text, "a folder name (text)", "name=my_sweep"),
    "seed": (_whole, "a whole number", "seed=0"),
    "channels_last": (lambda v: v == "auto" or _flag(v), "auto, true or false", "channels_last=auto"),
    "compile": (_flag, "true or false", "compile=true"),
    "compile_mode": (_text, "a torch.compile mode (text)", "compile_mode=default"),
    "progress_bar": (_flag, "true or false", "progress_bar=false"),
    "verbose": (_flag, "true or false", "verbose=true"),
    "stop_after": (_text_or_null, "a stage name or null", "stop_after=prune"),
    "ckpt_path": (_text_or_null, "a path or null", "ckpt_path=outputs/runs/<name>"),
    "tags": (lambda v: isinstance(v, (list, ListConfig)) and all(isinstance(t, str) for t in v),
             "a list of labels", "'tags=[ablation,v2]'"),
    "extras.print_config": (_flag, "true or false", "extras.print_config=true"),
    "extras.ignore_warnings": (_flag, "true or false", "extras.ignore_warnings=false"),
}


def check_value(key: str, value) -> None:
    accepts, what, example = TYPES[key]
    if not accepts(value):
        raise ConfigError(key, value, f"must be {what}; this is a {_kind(value)}.", f"use e.g. {example}.")


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false value"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "text"
    return "list" if isinstance(value, (list, ListConfig)) else "mapping"


def check_values(cfg: DictConfig) -> None:
    """Each key of :data:`TYPES` in the composed job holds its type."""
    for key in TYPES:
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_resolution_failure=False)
        if value is not _ABSENT:
            check_value(key, value)


_ABSENT = object()


def check_swept_values(overrides: list) -> None:
    """Every value of a ``-m`` sweep over a key of :data:`TYPES` (the composed job holds only the first)."""
    for o in overrides:
        key = o.key_or_group
        if key in TYPES and o.is_sweep_override() and o.is_discrete_sweep():
            for value in o.sweep_iterator():
                check_value(key, value)
