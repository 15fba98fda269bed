"""``make wheelhouse`` (``python -m tgp.gpu_check.wheelhouse``): the wheels the GPU check installs
offline on a bare GPU machine, into ``wheelhouse/`` (git-ignored; it travels with the working tree).

Pure-Python wheels only (``py3-none-any``), at the versions of ``constraints.txt``, so they install
on whatever Python and platform the GPU machine has: hydra-core, omegaconf, antlr4-python3-runtime
(an sdist on PyPI: built into a wheel here), rich with markdown-it-py, mdurl and pygments, pytest
with iniconfig and pluggy. What the GPU image brings (torch, torchvision, lightning, torchmetrics
and what they require: numpy, pillow, PyYAML, packaging, typing-extensions, ...) is not in it.
Run where a package index is reachable; the file ``requirements.txt`` beside the wheels names them.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: distribution → how it comes: "wheel" (PyPI's py3-none-any wheel) or "sdist" (built here)
DISTRIBUTIONS = {
    "hydra-core": "wheel", "omegaconf": "wheel", "antlr4-python3-runtime": "sdist",
    "rich": "wheel", "markdown-it-py": "wheel", "mdurl": "wheel", "pygments": "wheel",
    "pytest": "wheel", "iniconfig": "wheel", "pluggy": "wheel",
}


def pins(constraints: Path) -> dict[str, str]:
    """``name==version`` of each distribution, from the constraints file."""
    found = {}
    for line in constraints.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^,\s]+)", line.strip())
        if m:
            found[m.group(1).lower().replace("_", "-")] = m.group(2)
    missing = [d for d in DISTRIBUTIONS if d not in found]
    if missing:
        raise SystemExit(f"wheelhouse: {constraints} pins none of {', '.join(missing)}. Fix: run `make install` "
                         "and regenerate the constraints (uv pip freeze), or add the pins by hand.")
    return {d: found[d] for d in DISTRIBUTIONS}


def build(out: Path, constraints: Path) -> list[Path]:
    versions = pins(constraints)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels = [f"{d}=={v}" for d, v in versions.items() if DISTRIBUTIONS[d] == "wheel"]
    sdists = [f"{d}=={v}" for d, v in versions.items() if DISTRIBUTIONS[d] == "sdist"]
    subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "--dest", str(out), *wheels], check=True)
    subprocess.run([*pip, "wheel", "--no-deps", "--no-binary=:all:", "--wheel-dir", str(out), *sdists], check=True)
    files = sorted(out.glob("*.whl"))
    compiled = [f.name for f in files if not f.name.endswith("-none-any.whl")]
    if compiled:
        raise SystemExit(f"wheelhouse: {', '.join(compiled)} are not pure-Python wheels and would not install on "
                         "another Python or platform. Fix: drop them from tgp.gpu_check.wheelhouse.DISTRIBUTIONS.")
    (out / "requirements.txt").write_text("".join(f"{d}=={v}\n" for d, v in versions.items()))
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tgp.gpu_check.wheelhouse", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "wheelhouse"))
    ap.add_argument("--constraints", default=str(ROOT / "constraints.txt"))
    args = ap.parse_args(argv)
    files = build(Path(args.out), Path(args.constraints))
    size = sum(f.stat().st_size for f in files)
    for f in files:
        print(f"  {f.name}  {f.stat().st_size / 1e6:.2f} MB")
    print(f"wheelhouse: {len(files)} wheels, {size / 2**20:.1f} MiB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
