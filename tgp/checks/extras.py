"""Config options that need an optional extra of tgp (``pip install 'tgp[<extra>]'``), named where it is missing.

Without the extra, Hydra would say that its config group has "no option 'optuna'" (the Optuna
sweeper's and submitit's configs come with their plugins) or fail when it builds the launcher; tgp
names the extra instead, before Hydra starts.
"""

from __future__ import annotations

import importlib.util

from omegaconf import DictConfig, OmegaConf

from tgp.errors import ConfigError

_OPTUNA = ("optuna", ("hydra_plugins.hydra_optuna_sweeper", "optuna"), "the Optuna sweeper")
_CLUSTER = ("cluster", ("hydra_plugins.hydra_submitit_launcher", "submitit"), "the submitit launchers")
# group → option → (extra, modules it brings, what they are); hparams_search=tgp_optuna selects hydra/sweeper=optuna.
EXTRAS = {
    "hydra/sweeper": {"optuna": _OPTUNA},
    "hparams_search": {"tgp_optuna": _OPTUNA},
    "hydra/launcher": {"node": ("cluster", ("submitit",), "submitit's local executor"),
                       "slurm": _CLUSTER, "submitit_slurm": _CLUSTER, "submitit_local": _CLUSTER},
}
_FIX = {"optuna": "or drop hparams_search to run one job (or a -m grid sweep) without a search.",
        "cluster": "or drop hydra/launcher to run the jobs one after another here."}


def _absent(modules) -> list[str]:
    missing = []
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except (ImportError, ValueError):  # a parent package that is missing, or a module blocked in sys.modules
            missing.append(name)
    return missing


def _refusal(setting: str, option: str, extra: str, modules, what: str) -> ConfigError | None:
    missing = _absent(modules)
    if not missing:
        return None
    return ConfigError(setting, option, f"{setting}={option} needs {what} from tgp's `{extra}` extra, which is not "
                       f"installed here (no module {', '.join(missing)}).",
                       f"install it with pip install 'tgp[{extra}]' (in a checkout: pip install -e '.[{extra}]'), "
                       f"{_FIX[extra]}")


def missing_extra(group: str, option: str, job: list[str]) -> ConfigError | None:
    """For a config option Hydra cannot find: the refusal naming its extra, when an extra provides it and is
    missing (named after the command line's choice that led to it, e.g. ``hparams_search=tgp_optuna``)."""
    need = EXTRAS.get(group, {}).get(option)
    if need is None:
        return None
    for override in job:
        key, _, chosen = override.partition("=")
        if EXTRAS.get(key.lstrip("+~"), {}).get(chosen) == need:
            group, option = key.lstrip("+~"), chosen
            break
    return _refusal(group, option, *need)


def check_extras(cfg: DictConfig, multirun: bool) -> None:
    """The job's config-group choices that need an extra (``hydra/launcher=node``: submitit) have it; a
    launcher or sweeper only under ``-m``, where it runs."""
    for group, options in EXTRAS.items():
        if group.startswith("hydra/") and not multirun:
            continue
        option = OmegaConf.select(cfg, f"hydra.runtime.choices.{group}", default=None)
        need = options.get(str(option)) if option is not None else None
        refusal = _refusal(group, str(option), *need) if need is not None else None
        if refusal is not None:
            raise refusal
