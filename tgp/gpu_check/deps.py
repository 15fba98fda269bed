"""What the GPU check needs beyond a bare GPU machine's torch, torchvision, lightning and torchmetrics,
installed offline from the local wheelhouse (``make wheelhouse``).

Only pure-Python wheels travel in the wheelhouse (they install on any Python 3 and platform).
PyYAML, the one compiled module tgp needs that is not in it, comes with lightning (which
requires it); where it is missing anyway, the parts that compose Hydra configs fail and the
record says why, while the others still run.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

#: what a bare GPU machine brings (import name → distribution)
PREINSTALLED = {"torch": "torch", "torchvision": "torchvision", "lightning": "lightning", "torchmetrics": "torchmetrics"}
#: compiled, not in the wheelhouse: lightning requires it
COMPILED = {"yaml": "PyYAML"}
#: what the check adds from the wheelhouse (import name → distribution), pure Python all
FROM_WHEELHOUSE = {"hydra": "hydra-core", "omegaconf": "omegaconf", "antlr4": "antlr4-python3-runtime",
                   "rich": "rich", "pytest": "pytest"}
REQUIREMENTS = "requirements.txt"  # in the wheelhouse: the pinned distributions it holds
VENV = ".gpu-venv"  # in the repository (git-ignored): a venv over the machine's packages
TARGET = ".gpu-deps"  # fallback where venv is unavailable: a folder put on PYTHONPATH


def missing(modules) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _run(cmd: list[str], timeout: float) -> tuple[int, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f} s: {' '.join(cmd)}"
    return p.returncode, (p.stdout + p.stderr)[-3000:]


def ensure(root: Path, wheelhouse: Path, timeout: float) -> dict:
    """The Python the parts run with and what was done to get it.

    Returns ``{"status", "python", "pythonpath", "how", "installed", "missing_preinstalled",
    "missing_compiled", "note"}``: ``how`` is ``present`` (this Python has everything), ``venv``
    (``.gpu-venv`` with ``--system-site-packages`` + ``pip install --no-index --find-links``) or
    ``target`` (``pip install --target .gpu-deps``, put on PYTHONPATH, where venv is unavailable)."""
    record = {"python": sys.executable, "pythonpath": [], "how": "present", "installed": [],
              "missing_preinstalled": [PREINSTALLED[m] for m in missing(PREINSTALLED)],
              "missing_compiled": [COMPILED[m] for m in missing(COMPILED)]}
    notes = []
    if record["missing_preinstalled"]:
        notes.append(f"not installed here: {', '.join(record['missing_preinstalled'])} (the GPU image should bring "
                     "them; the parts that need them fail)")
    if record["missing_compiled"]:
        notes.append(f"{', '.join(record['missing_compiled'])} is missing and compiled, so not in the wheelhouse: the "
                     "parts that compose Hydra configs fail (install it with pip where a network exists)")
    wanted = [FROM_WHEELHOUSE[m] for m in missing(FROM_WHEELHOUSE)]
    venv_python = root / VENV / "bin" / "python"
    if wanted and venv_python.is_file():  # an earlier check's venv
        code, _ = _run([str(venv_python), "-c", "import " + ", ".join(FROM_WHEELHOUSE)], timeout)
        if code == 0:
            record.update(python=str(venv_python), how="venv")
            wanted = []
    if wanted:
        requirements = wheelhouse / REQUIREMENTS
        if not requirements.is_file():
            notes.append(f"missing here: {', '.join(wanted)}, and there is no wheelhouse at {wheelhouse} (run "
                         "`make wheelhouse` on a machine with a network and copy wheelhouse/ along)")
            return {**record, "status": "failed", "note": "; ".join(notes)}
        pip = ["-m", "pip", "install", "--no-index", "--find-links", str(wheelhouse), "-r", str(requirements),
               "--disable-pip-version-check", "-q"]
        code, out = _run([sys.executable, "-m", "venv", "--system-site-packages", str(root / VENV)], timeout)
        if code == 0:
            code, out = _run([str(venv_python), *pip], timeout)
            record.update(python=str(venv_python), how="venv")
        if code != 0:  # no venv module (or pip in it): install beside the machine's packages instead
            notes.append(f"venv unavailable ({out.strip().splitlines()[-1] if out.strip() else code}); used --target")
            code, out = _run([sys.executable, *pip, "--no-deps", "--target", str(root / TARGET)], timeout)
            record.update(python=sys.executable, how="target", pythonpath=[str(root / TARGET)])
        if code != 0:
            notes.append(f"pip install from the wheelhouse failed: {out.strip()[-600:]}")
            return {**record, "status": "failed", "note": "; ".join(notes)}
        record["installed"] = wanted
    ok = not record["missing_preinstalled"] and not record["missing_compiled"]
    return {**record, "status": "ok" if ok else "failed", "note": "; ".join(notes) or None}


def part_env(record: dict, root: Path, extra: dict | None = None) -> dict:
    """The environment variables of a part: tgp from the source tree, the wheelhouse's packages."""
    env = dict(os.environ)
    paths = [str(root), *record.get("pythonpath", [])]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("WANDB_SILENT", "true")
    env.update(extra or {})
    return env
