"""The GPU check's own parts, each run in a subprocess by :mod:`tgp.gpu_check` (the others are
tgp's commands: pytest, ``tgp.bench``, ``tgp.run``, ``reproduce_table2.py``).

    python -m tgp.gpu_check.parts env RESULT.json
    python -m tgp.gpu_check.parts fake_cifar ROOT N_TRAIN N_TEST RESULT.json
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time

#: the distributions whose versions the record names (those a bare GPU machine brings and ours)
DISTRIBUTIONS = ("torch", "torchvision", "lightning", "torchmetrics", "triton", "numpy", "pillow", "PyYAML",
                 "hydra-core", "omegaconf", "antlr4-python3-runtime", "rich", "pytest")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvidia_smi() -> dict:
    """Driver version, GPU name and memory as ``nvidia-smi`` reports them (empty without it)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    name, driver, memory = (v.strip() for v in out.splitlines()[0].split(",")[:3])
    return {"nvidia_smi_name": name, "driver": driver, "nvidia_smi_memory": memory}


def env() -> dict:
    """Device, driver, torch, CUDA and library versions."""
    import torch

    cuda = torch.cuda.is_available()
    info = {
        "python": platform.python_version(), "executable": sys.executable, "platform": platform.platform(),
        "cpu_cores": os.cpu_count(), "cuda_available": cuda, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "versions": {d: _version(d) for d in DISTRIBUTIONS},
        "device": "cpu", "driver": None,
    }
    if cuda:
        props = torch.cuda.get_device_properties(0)
        info.update({"device": torch.cuda.get_device_name(0), "device_count": torch.cuda.device_count(),
                     "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
                     "memory_gib": round(props.total_memory / 2**30, 1), "bf16": torch.cuda.is_bf16_supported()})
        info.update(_nvidia_smi())
    return info


def fake_cifar(root: str, n_train: int, n_test: int) -> dict:
    """CIFAR-10 of ``n_train`` + ``n_test`` generated images in torchvision's pickle format under ``root``."""
    from tgp.data.fake_trees import write_fake_cifar

    start = time.perf_counter()
    folder = write_fake_cifar(root, n_train=n_train, n_test=n_test)
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    return {"folder": folder, "n_train": n_train, "n_test": n_test, "bytes": size,
            "seconds": round(time.perf_counter() - start, 2)}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["env"] and len(args) == 2:
        result, out = env(), args[1]
    elif args[:1] == ["fake_cifar"] and len(args) == 5:
        result, out = fake_cifar(args[1], int(args[2]), int(args[3])), args[4]
    else:
        print(__doc__, file=sys.stderr)
        return 2
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
