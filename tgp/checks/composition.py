"""Why a job does not compose, as one paragraph: Hydra's composition errors (a group option that does
not exist, a key that does not exist, ``+`` on an existing key, a sweep without ``-m``), a YAML syntax
error in any config file (ours, ``--config-dir``'s or ``hydra.searchpath``'s), a plugin config that an
optional extra provides, and ``+key`` additions that nothing reads.
"""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf

from tgp.checks.extras import missing_extra
from tgp.checks.suggest import close, unknown_key_advice
from tgp.errors import ConfigError, TGPError

_SHOW = "`python -m tgp.run --cfg job` prints every setting."
_CLOSED = ("no such setting. tgp's configs are closed: every setting already exists in conf/ with its default, so a "
           "key that does not exist is a typo, not a new setting (Hydra's `+key=...` would add a key that nothing reads).")


def one_line(e: Exception) -> str:
    """Hydra's message without its search-path listing and links, on one line."""
    kept = []
    for line in (line.strip() for line in str(e).splitlines()):
        if line.startswith(("Config search path", "See https://hydra.cc")):
            break
        if line:
            kept.append(line)
    return " ".join(kept)


def yaml_error(e) -> TGPError:
    """A YAML syntax error as a paragraph naming the file and the line (1-based)."""
    mark = e.problem_mark or e.context_mark
    where = f"{mark.name}, line {mark.line + 1}" if mark is not None else "a config file"
    started = ""
    if e.context_mark is not None and e.problem_mark is not None and e.context_mark.line != e.problem_mark.line:
        started = f" that starts on line {e.context_mark.line + 1}"
    what = " ".join(p for p in (e.problem, f"{e.context}{started}" if e.context else "") if p)
    return TGPError(f"{where}: the config file is not valid YAML ({what}). Fix: correct the YAML at that line "
                    "(indentation, a missing ':' or closing bracket, a tab instead of spaces), or drop the config "
                    "that includes this file.")


def _find(job: list[str], parser, key: str):
    for o in parser.parse_overrides(job):
        if o.key_or_group == key:
            return o
    return None


def _shown(o) -> object:
    if o is None:
        return None
    value = o.value()
    return o.get_value_element_as_str() if o.is_sweep_override() else value


def _compose_quietly(config_name: str, job: list[str]) -> DictConfig | None:
    from hydra import compose

    for overrides in (job, []):
        try:
            return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
        except Exception:  # noqa: BLE001 - only used for advice
            continue
    return None


def composition_error(e: Exception, config_name: str, job: list[str], parser, loader) -> TGPError:
    """Hydra's composition error as one of our paragraphs (setting, value, problem, fix)."""
    import yaml
    from hydra.errors import MissingConfigException

    cause = e
    while cause is not None and not isinstance(cause, yaml.MarkedYAMLError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        return yaml_error(cause)
    text = str(e)
    missing = re.search(r"Could not (?:find|load) '([^']+/[^']+)'", text)
    extra = missing_extra(*missing.group(1).rsplit("/", 1), job) if missing else None
    if extra is not None:  # a plugin's config (hydra/sweeper/optuna, hydra/launcher/submitit_slurm)
        return extra
    missing = re.search(r"Could not find '([^']+/[^']+)'", text)
    if isinstance(e, MissingConfigException) and missing:
        group, option = missing.group(1).rsplit("/", 1)
        options = [o for o in loader.get_group_options(group) if not o.startswith("_")]
        if options:
            hit = close(option, options)
            hint = f"did you mean {group}={hit}? " if hit else ""
            return ConfigError(group, option, f"config group '{group}' has no option '{option}' (no conf/{group}/{option}.yaml).",
                               f"{hint}use {group}=<option> with one of: {', '.join(options)}.")
    unknown = (re.search(r"Could not override '([^']+)'", text)
               or re.search(r"Could not delete from config\. '([^']+)' does not exist", text))
    if unknown:
        key = unknown.group(1)
        o = _find(job, parser, key)
        deleting = o is not None and o.is_delete()
        rest = [s for s in job if o is None or s != o.input_line]
        problem, hint = unknown_key_advice(key, None if deleting or o is None else o.get_value_element_as_str(),
                                           _compose_quietly(config_name, rest), config_name, loader,
                                           prefix="~" if deleting else "")
        if deleting:  # `~key`: there is no value to show
            return TGPError(f"~{key}: {problem or _CLOSED} Fix: {hint}{'' if problem else _SHOW}")
        return ConfigError(key, _shown(o), problem or _CLOSED, hint if problem else f"{hint}{_SHOW}")
    exists = re.search(r"An item is already at '([^']+)'", text)
    if exists:
        key = exists.group(1)
        o = _find(job, parser, key)
        return ConfigError(key, _shown(o), "the setting exists already, so it cannot be added with `+`.",
                           f"drop the +: {key}={o.get_value_element_as_str() if o else '...'}.")
    ambiguous = re.search(r"Ambiguous value for argument '([^'=]+)=([^']*)'", text)
    if ambiguous:
        key, value = ambiguous.groups()
        return ConfigError(key, value, "a comma-separated value is a sweep, which needs -m.",
                           f"add -m to run one job per value; for a list write '{key}=[{value}]', for a string "
                           f"\"{key}='{value}'\".")
    primary = re.search(r"Cannot find primary config '([^']+)'", text)
    if primary:
        return ConfigError("--config-name", primary.group(1), f"there is no conf/{primary.group(1)}.yaml.",
                           "drop --config-name (tgp's root config is conf/config.yaml).")
    return ConfigError("overrides", " ".join(job), f"the config does not compose: {one_line(e)}",
                       "see `python -m tgp.run --help` for the config groups and `--cfg job` for the settings.")


_ABSENT = object()


def check_added_keys(cfg: DictConfig, config_name: str, job: list[str], parser, loader) -> None:
    """``+key=...``/``++key=...`` that adds a key nothing reads is refused (kwargs of a ``_target_`` node pass)."""
    for o in parser.parse_overrides(job):
        if not (o.is_add() or o.is_force_add()) or o.is_hydra_override() or o.package is not None:
            continue
        key = o.key_or_group
        if loader.repository.group_exists(key):
            continue
        parent = OmegaConf.select(cfg, key.rsplit(".", 1)[0], default=None) if "." in key else None
        if isinstance(parent, DictConfig) and "_target_" in parent:  # extra keyword arguments of what it builds
            continue
        base = _compose_quietly(config_name, [s for s in job if s != o.input_line])
        if o.is_force_add() and base is not None and OmegaConf.select(base, key, default=_ABSENT) is not _ABSENT:
            continue  # ++ on an existing key is a plain override
        problem, hint = unknown_key_advice(key, o.get_value_element_as_str(), base, config_name, loader)
        raise ConfigError(
            key, _shown(o),
            problem or ("no such setting: this `+` adds a key that nothing in tgp reads. tgp's configs are closed: "
                        "every setting already exists in conf/ with its default, so no `+key` is needed."),
            hint if problem else f"{hint or 'drop it; '}{_SHOW}")
