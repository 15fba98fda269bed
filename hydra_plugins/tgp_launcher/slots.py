"""The slots of ``hydra/launcher=node``: which GPUs (or CPU cores) each concurrently running job gets.

Pure functions of the launcher's settings and of what this machine shows; nothing here starts a
process. :func:`plan_slots` is also what ``tgp-run``'s precheck calls, so a setting that cannot work
is refused before Hydra creates anything.

GPU mode (``devices: auto`` on a machine with CUDA GPUs, or an explicit list of GPU numbers): the
GPUs are cut into groups of ``gpus_per_job`` consecutive ones, and every group is offered to
``jobs_per_gpu`` jobs at a time. A job's process gets ``CUDA_VISIBLE_DEVICES`` set to its group, so
inside the job its GPUs are ``cuda:0..gpus_per_job-1``. GPU numbers are the ones this process sees:
when the launcher itself runs under ``CUDA_VISIBLE_DEVICES=4,5,6,7``, ``devices: [0, 1]`` means
physical GPUs 4 and 5, and the job is given ``CUDA_VISIBLE_DEVICES=4`` (or ``5``).

CPU mode (``devices: cpu``, or ``auto`` on a machine without a GPU): ``cpu_jobs`` jobs at a time
(``auto``: one per core), CUDA hidden from them.

In both modes ``pin_cpus`` gives every slot its own share of the cores this process may use: the
job's process (and its data-loader workers) is pinned to them and its thread pools sized to them
(``OMP_NUM_THREADS``/``MKL_NUM_THREADS``), so concurrent jobs do not fight over the same cores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

from tgp.errors import ConfigError

SLOT_ENV = "TGP_LAUNCHER_SLOT"  # the slot number, for the job to record (tgp: metrics.json `launcher_slot`)


# A launcher setting that cannot work on this machine: the setting, its value, why, and the fix.
# The class lives in tgp.errors, not here: Hydra's plugin scan re-executes every module under
# hydra_plugins in its existing namespace (``load_module``), which would make a class defined here
# a new class after the scan, and an ``except SlotError`` bound before it would miss what is raised.
SlotError = ConfigError


@dataclass(frozen=True)
class Slot:
    """One place a job can run: ``gpus`` are ``CUDA_VISIBLE_DEVICES`` entries (None: CPU mode, CUDA
    hidden), ``cpus`` the cores it is pinned to (empty: not pinned)."""

    index: int
    gpus: tuple[str, ...] | None
    cpus: tuple[int, ...] = ()

    def env(self) -> dict[str, str]:
        """The environment variables that give a job's process this slot."""
        env = {SLOT_ENV: str(self.index), "CUDA_VISIBLE_DEVICES": ",".join(self.gpus or ())}
        if self.cpus:
            threads = str(len(self.cpus))
            env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        return env

    def describe(self) -> str:
        where = f"GPU {','.join(self.gpus)}" if self.gpus is not None else "no GPU"
        cores = f", {'core' if len(self.cpus) == 1 else 'cores'} {ranges(self.cpus)}" if self.cpus else ""
        return f"slot {self.index}: {where}{cores}"


def ranges(ids: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    out: list[str] = []
    ids = sorted(ids)
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(out)


def visible_gpus() -> list[str]:
    """The ``CUDA_VISIBLE_DEVICES`` entries of the GPUs this process sees (``["0", "1", ...]`` when
    the variable is unset). Counts them with ``torch.cuda.device_count()``, which creates no CUDA
    context (and the jobs are fresh processes anyway)."""
    import torch

    count = torch.cuda.device_count()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return [str(i) for i in range(count)]
    return [s.strip() for s in env.split(",") if s.strip()][:count]


def usable_cores() -> list[int]:
    """The CPU cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def _positive(setting: str, value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SlotError(f"hydra.launcher.{setting}", value, f"{what} must be a whole number of at least 1.",
                        f"set hydra.launcher.{setting}=1 (or more).")
    return value


def plan_slots(devices: Any = "auto", gpus_per_job: int = 1, jobs_per_gpu: int = 1, cpu_jobs: Any = "auto",
               pin_cpus: bool = True, *, gpus: Sequence[str] | None = None,
               cores: Sequence[int] | None = None) -> list[Slot]:
    """The slots for these settings on a machine showing ``gpus`` (``CUDA_VISIBLE_DEVICES`` entries;
    default: :func:`visible_gpus`) and ``cores`` (default: :func:`usable_cores`). Slots are ordered so
    that the first ones spread over different GPUs (fewer jobs than slots: each job has a GPU to
    itself). Raises :class:`SlotError` for settings that cannot work here."""
    cores = list(usable_cores() if cores is None else cores)
    if isinstance(devices, str) and devices not in ("auto", "cpu"):
        raise SlotError("hydra.launcher.devices", devices, "devices is `auto`, `cpu` or a list of GPU numbers.",
                        "write hydra.launcher.devices=auto (every GPU of this machine, or its CPU cores when it has "
                        "none), hydra.launcher.devices=cpu, or e.g. 'hydra.launcher.devices=[0,1,2,3]'.")
    if devices == "auto" or not isinstance(devices, str):
        gpus = list(visible_gpus() if gpus is None else gpus)
    if devices == "auto" and not gpus:
        for setting, value in (("gpus_per_job", gpus_per_job), ("jobs_per_gpu", jobs_per_gpu)):
            if value != 1:
                raise SlotError(f"hydra.launcher.{setting}", value, "this machine shows no CUDA GPU "
                                "(torch.cuda.device_count() is 0), so hydra.launcher.devices=auto runs the jobs on its "
                                "CPU cores and there are no GPUs to share out.",
                                f"run the sweep on a machine with GPUs, or drop hydra.launcher.{setting} "
                                "(hydra.launcher.cpu_jobs sets how many CPU jobs run at once).")
    if devices == "cpu" or (devices == "auto" and not gpus):
        return _cpu_slots(cpu_jobs, pin_cpus, cores)

    gpus_per_job = _positive("gpus_per_job", gpus_per_job, "the number of GPUs a job sees")
    jobs_per_gpu = _positive("jobs_per_gpu", jobs_per_gpu, "the number of jobs sharing a GPU")
    if devices == "auto":
        chosen = list(gpus)
    else:
        ids = list(devices)
        if not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise SlotError("hydra.launcher.devices", ids, "the list must hold GPU numbers (0, 1, ...).",
                            "e.g. 'hydra.launcher.devices=[0,1]', or hydra.launcher.devices=auto for every GPU.")
        if len(set(ids)) != len(ids):
            raise SlotError("hydra.launcher.devices", ids, "a GPU is listed twice; two jobs would share it without "
                            "jobs_per_gpu saying so.",
                            "list every GPU once; set hydra.launcher.jobs_per_gpu to share them.")
        missing = [i for i in ids if i < 0 or i >= len(gpus)]
        if missing:
            shown = (f"this machine shows {len(gpus)} GPU{'s' if len(gpus) != 1 else ''} (numbers 0-{len(gpus) - 1})"
                     if gpus else "this machine shows no CUDA GPU (torch.cuda.device_count() is 0)")
            fix = ("list GPUs that exist, or use hydra.launcher.devices=auto for all of them." if gpus else
                   "use hydra.launcher.devices=cpu (or auto) to run the jobs side by side on the CPU cores, with "
                   "trainer=cpu.")
            which = f"GPU {missing[0]} does not" if len(missing) == 1 else f"GPUs {', '.join(map(str, missing))} do not"
            raise SlotError("hydra.launcher.devices", ids, f"{which} exist: {shown}.", fix)
        chosen = [gpus[i] for i in ids]
    if gpus_per_job > len(chosen):
        raise SlotError("hydra.launcher.gpus_per_job", gpus_per_job,
                        f"a job cannot see more GPUs than the launcher has to give out ({len(chosen)}: "
                        f"{','.join(chosen)}).",
                        f"set hydra.launcher.gpus_per_job to at most {len(chosen)} (trainer=ddp then runs DDP over "
                        "each job's GPUs), or drop hydra/launcher=node to run one job at a time over all GPUs.")
    groups = [tuple(chosen[i:i + gpus_per_job]) for i in range(0, len(chosen) - gpus_per_job + 1, gpus_per_job)]
    order = [g for _ in range(jobs_per_gpu) for g in groups]  # round 1 gives every group a job, then round 2...
    shares = _core_shares(len(order), cores) if pin_cpus else [()] * len(order)
    return [Slot(k, g, shares[k]) for k, g in enumerate(order)]


def _cpu_slots(cpu_jobs: Any, pin_cpus: bool, cores: list[int]) -> list[Slot]:
    if cpu_jobs == "auto":
        n = len(cores)
    else:
        n = _positive("cpu_jobs", cpu_jobs, "the number of jobs run at once on the CPU (or auto: one per core)")
    shares = _core_shares(n, cores) if pin_cpus else [()] * n
    return [Slot(k, None, shares[k]) for k in range(n)]


def _core_shares(n: int, cores: list[int]) -> list[tuple[int, ...]]:
    """``n`` disjoint, contiguous, near-equal shares of ``cores``; one core each (shared round-robin)
    when there are more slots than cores."""
    if not cores:
        return [()] * n
    if n > len(cores):
        return [(cores[k % len(cores)],) for k in range(n)]
    base, extra = divmod(len(cores), n)
    shares, start = [], 0
    for k in range(n):
        size = base + (1 if k < extra else 0)
        shares.append(tuple(cores[start:start + size]))
        start += size
    return shares
