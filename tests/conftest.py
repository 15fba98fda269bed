"""Shared fixtures: composed configs, CLI runs in temporary folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Tests never download: the Hugging Face clients (imported later, and by every CLI subprocess, which
# inherits the environment) resolve hub names from the local cache only, and fail at once otherwise.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from tgp.naming import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
register_resolvers()


def compose_cfg(overrides: list[str], tmp_path: Path):
    """Compose the root config like the CLI does, with every output under ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[*overrides, f"paths.log_dir={tmp_path}", f"paths.output_dir={tmp_path}/run", "progress_bar=false"],
        )


def run_cli(args: list[str], tmp_path: Path, *, check: bool = True, timeout: int = 600, env=None) -> subprocess.CompletedProcess:
    """``python -m tgp.run`` in a subprocess, outputs under ``tmp_path``; the run dir is ``tmp_path/run``."""
    multirun = "-m" in args
    where = [] if multirun else [f"hydra.run.dir={tmp_path}/run"]
    cmd = [sys.executable, "-m", "tgp.run", *args, f"paths.log_dir={tmp_path}", *where, "progress_bar=false"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "WANDB_MODE": "offline", **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nSTDOUT\n{proc.stdout[-4000:]}\nSTDERR\n{proc.stderr[-6000:]}")
    return proc


def read_json(path: Path):
    return json.loads(Path(path).read_text())


@pytest.fixture
def cli(tmp_path):
    return lambda args, **kw: run_cli(args, tmp_path, **kw)


@pytest.fixture(scope="session")
def roleswap(tmp_path_factory):
    """The generated roleswap task and its WordPiece tokenizer folder, written once per session
    (``{"root", "folder", "tokenizer", "train", "dev"}``)."""
    from tgp.data.text.generated import write_roleswap

    root = tmp_path_factory.mktemp("roleswap")
    return {"root": str(root), **write_roleswap(root, n_train=240, n_dev=60, seed=0)}
