"""The folders a job (or sweep) creates can be created and written: the run or sweep folder,
``paths.log_dir`` and ``paths.stage_store`` (tried with a temporary folder, removed again)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tgp.errors import ConfigError

_FOLDER_FIXES = {
    "paths.log_dir": "set paths.log_dir to a folder you can write (runs, sweeps and the stage store go under it).",
    "paths.stage_store": "set paths.stage_store to a folder you can write, or paths.stage_store=null to keep the "
                         "stages inside the run folder.",
    "hydra.run.dir": "set hydra.run.dir to a folder you can write, or drop it (runs then go to paths.log_dir/runs).",
    "hydra.sweep.dir": "set hydra.sweep.dir to a folder you can write, or drop it (sweeps then go to paths.log_dir/sweeps).",
}


def check_outputs(cfg: DictConfig, multirun: bool, checked: set) -> None:
    """Every folder the job creates can be created and written; ``checked`` remembers the folders a sweep's
    earlier jobs passed, so each is tried once."""
    for setting in ("paths.log_dir", "paths.stage_store", "hydra.sweep.dir" if multirun else "hydra.run.dir"):
        try:
            path = OmegaConf.select(cfg, setting, default=None)
        except Exception:  # noqa: BLE001 - an interpolation only Hydra's job context resolves: Hydra checks it
            continue
        if path is None or (setting, str(path)) in checked:
            continue
        checked.add((setting, str(path)))
        check_writable_folder(setting, str(path))


def check_writable_folder(setting: str, path: str) -> None:
    """Raise ConfigError unless ``path`` exists as a writable folder or can be created as one."""
    target = Path(path).expanduser()
    target = target if target.is_absolute() else Path.cwd() / target
    probe = target
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    fix = _FOLDER_FIXES.get(setting, f"set {setting} to a folder you can write.")
    if not probe.is_dir():
        raise ConfigError(setting, path, f"{probe} is {'a file' if probe.exists() else 'a broken link'}, so no folder "
                          "can be created there.", fix)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".tgp-write-check-", dir=probe))
    except OSError as e:
        where = "the folder" if probe == target else f"{probe}, where the folder would be created,"
        raise ConfigError(setting, path, f"{where} is not writable ({e.strerror or e}).", fix) from None
