"""``python -m tgp.gpu_check`` (``make gpu-check``): one command for a GPU's first minutes.

On a machine that has only torch, torchvision, lightning and torchmetrics and no network, it
installs the rest from the local wheelhouse (``make wheelhouse``, see :mod:`tgp.gpu_check.deps`)
and runs tgp from the source tree, part after part, each in a subprocess with its own time budget
(a part that fails or runs out of time is recorded and the rest still run; the whole stays within
:data:`DEADLINE_S`):

==================  ==============================================================================
deps                what was installed from the wheelhouse, and how
env                 device, driver, torch, CUDA, cuDNN and library versions
gpu_tests           ``pytest -m gpu`` over the test files that hold GPU-marked tests
bench_<recipe>_*    ``python -m tgp.bench`` for cifar10_resnet18 and tiny_imagenet_resnet18 at the
                    recipes' batch and precision (bf16), eager and compiled, a short timing each
fake_cifar          a CIFAR-10 of generated images in the real pickle format and size (50k + 10k)
job                 a cifar10_resnet18 TGP job, one epoch per stage, through the device loader
                    (compile=false: the bench measures the compiled steps; compiling again here
                    would take a third of the budget)
table2              ``experiments/reproduce_table2.py --dry-run`` with the bench figures: the
                    calibrated Table 2 estimate
==================  ==============================================================================

Everything goes to ``<out>/<device>.json`` (every part with its status, seconds, budget, command
and result) and ``<out>/<device>.md`` (a summary); the parts' logs and the bench files to
``<out>/<device>/``. ``--cpu-dry`` runs every part at toy size through the same code paths on the
CPU (CUDA hidden; the compiled bench parts with ``TORCHDYNAMO_DISABLE=1``, since inductor's C++
build would take minutes there); the GPU tests then report "skipped: no CUDA".
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tgp.gpu_check import deps
from tgp.gpu_check.summary import markdown

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 470  # the whole check on one GPU, under 8 minutes with the orchestration around it
RECIPES = ("cifar10_resnet18", "tiny_imagenet_resnet18")
CIFAR_SIZE = (50_000, 10_000)  # the real CIFAR-10's train and test images
DRY_CIFAR_SIZE = (256, 64)


@dataclass
class Part:
    """One part: its command (built when it starts), budgets in seconds, the parts it needs."""

    name: str
    budget_s: float
    dry_budget_s: float
    needs: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)


@dataclass
class Check:
    out: Path  # <out>/<device>/ once the device is known
    work: Path  # generated data and the job's outputs (large files), removed at the end
    dry: bool
    python: str
    record: dict
    label: str = "unknown"
    started: float = field(default_factory=time.monotonic)

    @property
    def folder(self) -> Path:
        return self.out / self.label


def slug(device: str) -> str:
    """A device name as a file name, as ``tgp.bench`` names its files (``NVIDIA H100 80GB HBM3`` → ``nvidia_h100_80gb_hbm3``)."""
    return re.sub(r"[^a-z0-9]+", "_", device.lower()).strip("_") or "unknown"


def plan(dry: bool) -> list[Part]:
    compiled_env = {"TORCHDYNAMO_DISABLE": "1"} if dry else {}
    # GPU budgets: ours, not yet measured on a GPU (sized to sum to DEADLINE_S); dry budgets: generous,
    # for 2 shared CPU cores (the dry job took 63 s there at a load of 5, 151 s at a load of 7)
    parts = [Part("env", 20, 60), Part("gpu_tests", 55, 120)]
    for recipe in RECIPES:
        parts += [Part(f"bench_{recipe}_eager", 35, 150),
                  Part(f"bench_{recipe}_compiled", 85, 150, env=compiled_env)]
    parts += [Part("fake_cifar", 15, 30), Part("job", 90, 400, needs=("fake_cifar",)), Part("table2", 15, 60)]
    return parts


# -- the commands --------------------------------------------------------------------------------
def gpu_test_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if "pytest.mark.gpu" in p.read_text())


def command(part: Part, c: Check) -> list[str]:
    py = c.python
    if part.name == "env":
        return [py, "-m", "tgp.gpu_check.parts", "env", str(c.work / "env.json")]
    if part.name == "gpu_tests":
        return [py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "--junitxml",
                str(c.folder / "gpu_tests.xml"), *gpu_test_files()]
    if part.name.startswith("bench_"):
        recipe, mode = part.name[len("bench_"):].rsplit("_", 1)
        cmd = [py, "-m", "tgp.bench", "--recipes", recipe, "--compile", mode, "--out", str(c.folder / f"{part.name}.json")]
        if c.dry:
            return cmd + ["--device", "cpu", "--batch", "4", "--steps", "1", "--warmup", "0", "--repeats", "1",
                          "--epoch-batches", "1", "--data-images", "8", "--override", "model.width=4",
                          "--override", "teacher.net.width=4"]
        # a short timing (the compile in the warm-up): figures for the estimate, not a full bench
        return cmd + ["--steps", "10", "--warmup", "3", "--repeats", "1", "--epoch-batches", "40", "--data-images", "5000"]
    if part.name == "fake_cifar":
        n_train, n_test = DRY_CIFAR_SIZE if c.dry else CIFAR_SIZE
        return [py, "-m", "tgp.gpu_check.parts", "fake_cifar", str(c.work / "data"), str(n_train), str(n_test),
                str(c.folder / "fake_cifar.json")]
    if part.name == "job":
        cmd = [py, "-m", "tgp.run", "experiment=cifar10_resnet18", "method=tgp", "teacher.epochs=1",
               "kd_pretrain.epochs=1", "retrain.epochs=1", f"data.root={c.work / 'data'}", "data.verify_checksums=false",
               "data.loader=device", "compile=false", "name=gpu_check", f"paths.log_dir={c.work / 'logs'}",
               f"hydra.run.dir={c.work / 'job'}", "progress_bar=false"]
        if c.dry:
            cmd += ["trainer=cpu", "model.width=4", "teacher.net.width=4", "data.batch_size=32", "data.val_size=32",
                    "data.num_workers=0", "pruning.score_batches=2"]
        return cmd
    if part.name == "table2":
        return [py, str(ROOT / "experiments" / "reproduce_table2.py"), "--dry-run", "--bench", str(c.folder / "bench.json")]
    raise ValueError(f"unknown part {part.name}")


# -- running a part ------------------------------------------------------------------------------
def run_part(part: Part, c: Check, timeout: float) -> dict:
    """Run ``part`` in its own process group; on timeout the whole group is killed (compile workers too)."""
    cmd = command(part, c)
    log = c.folder / "logs" / f"{part.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = deps.part_env(c.record, ROOT, {**part.env, **({"CUDA_VISIBLE_DEVICES": ""} if c.dry else {})})
    start = time.monotonic()
    with open(log, "w") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    entry = {"command": " ".join(cmd), "log": str(log), "seconds": round(time.monotonic() - start, 1),
             "timeout_s": round(timeout), "exit_code": rc}
    if rc is None:
        return {**entry, "status": "timeout", "reason": f"ran past its {timeout:.3g} s budget and was stopped"}
    from tgp.gpu_check.summary import read_result

    result, status, reason = read_result(part.name, rc, c, log)
    return {**entry, "status": status, "reason": reason, "result": result}


def merge_bench(c: Check) -> Path | None:
    """The bench parts' files as one bench file (one entry per recipe, its modes together), for table2."""
    doc = None
    for path in sorted(c.folder.glob("bench_*.json")):
        part = json.loads(path.read_text())
        if doc is None:
            doc = part
            continue
        for name, entry in part.get("recipes", {}).items():
            if name in doc["recipes"]:
                doc["recipes"][name]["modes"].update(entry.get("modes", {}))
            else:
                doc["recipes"][name] = entry
    if doc is None:
        return None
    path = c.folder / "bench.json"
    _write(path, json.dumps(doc, indent=2))
    return path


def _write(path: Path, text: str) -> None:
    from tgp.io import atomic_write_bytes

    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def save(c: Check, doc: dict) -> tuple[Path, Path]:
    doc["seconds"] = round(time.monotonic() - c.started, 1)
    paths = c.out / f"{c.label}.json", c.out / f"{c.label}.md"
    _write(paths[0], json.dumps(doc, indent=2))
    _write(paths[1], markdown(doc))
    return paths


# -- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    import argparse
    import shutil

    ap = argparse.ArgumentParser(prog="python -m tgp.gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-dry", action="store_true", help="every part at toy size on the CPU (about a minute)")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "gpu_check"), help="where <device>.json/.md go")
    ap.add_argument("--wheelhouse", default=str(ROOT / "wheelhouse"), help="the local wheels (make wheelhouse)")
    ap.add_argument("--work", default=None, help="folder for the generated data and the job (default: a temporary "
                                                    "one, removed at the end)")
    ap.add_argument("--deadline", type=float, default=None,
                    help=f"seconds for the whole check (default {DEADLINE_S} on a GPU, 1500 with --cpu-dry)")
    args = ap.parse_args(argv)
    deadline = args.deadline or (1500.0 if args.cpu_dry else DEADLINE_S)
    start = time.monotonic()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="tgp_gpu_check_"))
    out = Path(args.out).resolve()

    t = time.monotonic()
    record = deps.ensure(ROOT, Path(args.wheelhouse), timeout=120)
    doc = {"schema": 1, "mode": "cpu-dry" if args.cpu_dry else "gpu", "device": None,
           "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "deadline_s": deadline,
           "parts": {"deps": {**record, "seconds": round(time.monotonic() - t, 1)}}}
    c = Check(out=out, work=work, dry=args.cpu_dry, python=record["python"], record=record, started=start)
    parts = plan(args.cpu_dry)
    print(f"tgp gpu check ({doc['mode']}): parts run with {c.python} ({record['how']}); deps {record['status']}"
          + (f": {record['note']}" if record.get("note") else ""), flush=True)
    try:
        for i, part in enumerate(parts):
            c.folder.mkdir(parents=True, exist_ok=True)
            if part.name == "table2":
                merge_bench(c)
            left = deadline - (time.monotonic() - start) - 5 * (len(parts) - i - 1)  # 5 s kept per later part
            failed_needs = [n for n in part.needs if doc["parts"].get(n, {}).get("status") != "ok"]
            if failed_needs:
                entry = {"status": "skipped", "reason": f"needs {', '.join(failed_needs)}, which did not succeed"}
            elif left < 5:
                entry = {"status": "skipped", "reason": f"the check's {deadline:.0f} s were spent before it started"}
            else:
                print(f"  {part.name} (budget {min(part.dry_budget_s if c.dry else part.budget_s, left):.0f} s) ...",
                      end="", flush=True)
                entry = run_part(part, c, min(part.dry_budget_s if c.dry else part.budget_s, left))
                print(f" {entry['status']} in {entry['seconds']} s"
                      + (f": {entry['reason']}" if entry.get("reason") else ""), flush=True)
            entry["budget_s"] = part.dry_budget_s if c.dry else part.budget_s
            doc["parts"][part.name] = entry
            if part.name == "env" and entry["status"] == "ok":
                env_folder = c.folder
                doc["device"] = entry["result"]["device"]
                c.label = "cpu_dry" if c.dry else slug(doc["device"])
                if env_folder != c.folder:  # the env part ran before the device was known
                    c.folder.mkdir(parents=True, exist_ok=True)
                    shutil.rmtree(c.folder / "logs", ignore_errors=True)
                    (env_folder / "logs").rename(c.folder / "logs")
                    shutil.rmtree(env_folder, ignore_errors=True)
                    entry["log"] = str(c.folder / "logs" / "env.log")
            json_path, md_path = save(c, doc)  # after every part: an interrupted check keeps what it has
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    json_path, md_path = save(c, doc)
    bad = [n for n, e in doc["parts"].items() if e["status"] not in ("ok", "skipped")]
    print(markdown(doc, brief=True))
    print(f"written: {json_path} and {md_path} ({doc['seconds']:.0f} s)")
    return 1 if bad else 0


__all__ = ["main", "plan", "run_part"]
