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
import shutil
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
#: in the repository (git-ignored): the wheelhouse's packages, put on the parts' PYTHONPATH. Not a
#: venv with --system-site-packages: one made from a Python that is itself a venv (or conda env)
#: does not see that environment's torch; and pip's --target is not refused under PEP 668.
TARGET = ".gpu-deps"


def missing(modules) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _run(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f} s: {' '.join(cmd)}"
    return p.returncode, (p.stdout + p.stderr)[-3000:]


def _importable(root: Path, timeout: float) -> tuple[int, str]:
    """Whether the parts' Python, with ``TARGET`` on its path, imports everything the check needs."""
    modules = [*PREINSTALLED, *COMPILED, *FROM_WHEELHOUSE]
    env = part_env({"pythonpath": [str(root / TARGET)]}, root)
    return _run([sys.executable, "-c", "import " + ", ".join(modules)], timeout, env)


def ensure(root: Path, wheelhouse: Path, timeout: float) -> dict:
    """What the parts need, installed from the wheelhouse where this Python lacks it.

    Returns ``{"status", "python", "pythonpath", "how", "installed", "missing_preinstalled",
    "missing_compiled", "note"}``: ``how`` is ``present`` (this Python has everything), ``reused``
    (an earlier check's ``.gpu-deps``) or ``target`` (``pip install --no-index --find-links
    wheelhouse --no-deps --target .gpu-deps``, put on PYTHONPATH) or ``unpacked`` (the same folder,
    filled by :func:`unpack_wheels` where the Python has no pip)."""
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
    if wanted and (root / TARGET).is_dir() and _importable(root, timeout)[0] == 0:
        record.update(how="reused", pythonpath=[str(root / TARGET)])
        wanted = []
    if wanted:
        requirements = wheelhouse / REQUIREMENTS
        if not requirements.is_file():
            notes.append(f"missing here: {', '.join(wanted)}, and there is no wheelhouse at {wheelhouse} (run "
                         "`make wheelhouse` on a machine with a network and copy wheelhouse/ along)")
            return {**record, "status": "failed", "note": "; ".join(notes)}
        shutil.rmtree(root / TARGET, ignore_errors=True)
        if importlib.util.find_spec("pip") is not None:
            code, out = _run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheelhouse),
                              "--no-deps", "--target", str(root / TARGET), "-r", str(requirements),
                              "--disable-pip-version-check", "-q"], timeout)
            how = "target"
        else:  # a Python without pip (a uv-made venv): a pure-Python wheel installs by unpacking it
            code, out = unpack_wheels(wheelhouse, requirements, root / TARGET)
            how = "unpacked"
        record.update(how=how, pythonpath=[str(root / TARGET)], installed=wanted)
        if code != 0:
            notes.append(f"installing from the wheelhouse failed ({how}): {out.strip()[-600:]}")
            return {**record, "status": "failed", "note": "; ".join(notes)}
    if record["how"] != "present" and not record["missing_preinstalled"] and not record["missing_compiled"]:
        code, out = _importable(root, timeout)
        if code != 0:  # e.g. Python < 3.11: pytest also wants exceptiongroup and tomli
            notes.append(f"installed, but an import fails: {out.strip().splitlines()[-1] if out.strip() else code}")
            return {**record, "status": "failed", "note": "; ".join(notes)}
    ok = not record["missing_preinstalled"] and not record["missing_compiled"]
    return {**record, "status": "ok" if ok else "failed", "note": "; ".join(notes) or None}


def _normalized(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def unpack_wheels(wheelhouse: Path, requirements: Path, target: Path) -> tuple[int, str]:
    """Install the pinned pure-Python wheels of ``requirements`` by unpacking them into ``target``
    (``(0, "")``, or ``(1, why)``). A pure wheel's archive is its files as installed, relative to
    site-packages, plus its ``.dist-info``; files under ``<name>.data/purelib`` belong at the top."""
    import zipfile

    wheels = {}
    for path in wheelhouse.glob("*.whl"):
        name, version = path.name.split("-")[:2]
        wheels[(_normalized(name), version)] = path
    target.mkdir(parents=True, exist_ok=True)
    for line in requirements.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        wheel = wheels.get((_normalized(name), version.strip()))
        if wheel is None:
            return 1, f"no wheel for {line} in {wheelhouse}"
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                parts = member.split("/")
                if parts[0].endswith(".data"):
                    if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                        continue  # scripts and headers: nothing the check imports
                    parts = parts[2:]
                if not parts[-1]:
                    continue
                out = target.joinpath(*parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(archive.read(member))
    return 0, ""


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
