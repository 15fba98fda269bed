"""Where and how the job runs: a GPU trainer only where CUDA is, DDP launch modes that can run a
multi-stage job, the node launcher's slots against this machine and the trainer, a SLURM launcher only
where SLURM's commands are."""

from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

from tgp.errors import ConfigError

# Strategies whose Lightning launcher re-runs the command line (sys.argv) in every other rank.
_RELAUNCHING = ("ddp", "fsdp", "deepspeed")


def strategy_name(cfg: DictConfig) -> str:
    """``trainer.strategy`` as a lower-case name (a strategy object: its ``_target_``)."""
    strategy = OmegaConf.select(cfg, "trainer.strategy", default="auto")
    name = str(strategy.get("_target_", "")) if isinstance(strategy, DictConfig) else str(strategy or "auto")
    return name.lower()


def _plain(value):
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def device_count(cfg: DictConfig) -> int:
    """Devices one fit uses: ``trainer.devices`` (a count, a list, ``"0,1"``, or -1/auto: every GPU here)."""
    devices = _plain(OmegaConf.select(cfg, "trainer.devices", default=1))
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if str(devices) in ("-1", "auto"):
        import torch

        accel = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto")).lower()
        return torch.cuda.device_count() if accel in ("gpu", "cuda", "auto") else 1
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    return int(devices)


def check_launch(cfg: DictConfig) -> None:
    """Refuse the DDP launch modes that cannot run a multi-stage job correctly.

    A job runs several stages, each a fresh ``Trainer.fit``; ``ddp_spawn`` starts the rank
    processes per fit, so every rank runs exactly the stage at hand. Lightning's ``ddp``
    launcher instead re-runs the whole command line in every other rank: that rank would run
    the whole pipeline from its first stage (and under ``-m`` the whole sweep), waiting on
    locks the first rank holds. Ranks started from outside (torchrun, srun with several tasks)
    do the same. All three are refused here, before anything runs.
    """
    world = os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or "1"
    if world.isdigit() and int(world) > 1:
        raise ConfigError(
            "launcher", f"{world} processes started from outside (torchrun/srun)",
            "tgp starts its DDP processes itself, once per stage (ddp_spawn); ranks started from outside would each "
            "run the whole multi-stage job.",
            "start one process per job (SLURM: ntasks_per_node=1) with trainer=ddp, which uses every GPU of the node.",
        )
    name = strategy_name(cfg)
    problem = ("Lightning's `ddp` launcher re-runs the whole command line in every other rank: there it would re-run "
               "every stage of the job (and under Hydra multirun, -m, the whole sweep), with wrong results or a hang.")
    if name == "auto":  # Lightning picks `ddp` (its re-running launcher) for more than one device
        n = device_count(cfg)
        if n > 1:
            devices = _plain(OmegaConf.select(cfg, "trainer.devices", default=1))
            accel = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto")).lower()
            spawn = "trainer=ddp_sim" if accel == "cpu" else "trainer=ddp"
            raise ConfigError("trainer.devices", devices, f"{n} devices with trainer.strategy=auto make Lightning "
                              f"start {n} processes with its `ddp` launcher, which re-runs the whole command line in "
                              "every other rank: there it would re-run every stage of the job (and under -m the whole "
                              "sweep), with wrong results or a hang.",
                              f"use trainer.devices=1 for one process, or {spawn} trainer.devices={devices} "
                              "(trainer.strategy=ddp_spawn: tgp starts the processes per stage).")
        return
    spawning = any(k in name for k in ("spawn", "fork", "notebook"))
    if not spawning and any(name.startswith(p) or f".{p}" in name for p in _RELAUNCHING):
        raise ConfigError("trainer.strategy", OmegaConf.select(cfg, "trainer.strategy"), problem,
                          "use trainer.strategy=ddp_spawn (trainer=ddp on GPUs, trainer=ddp_sim on the CPU do).")


def check_device(cfg: DictConfig) -> None:
    """``trainer.accelerator=gpu|cuda`` on a machine without CUDA (Lightning would stop with a traceback)."""
    accel = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto") or "auto").lower()
    if accel not in ("gpu", "cuda"):
        return
    import torch

    if torch.cuda.is_available():
        return
    choice = OmegaConf.select(cfg, "hydra.runtime.choices.trainer", default=None)
    via = f" (trainer={choice})" if choice and choice not in ("cpu", "ddp_sim", "default") else ""
    if "ddp" in strategy_name(cfg):
        fix = "use trainer=ddp_sim to run DDP as 2 CPU processes (gloo), or trainer=cpu for one process"
    else:
        fix = "use trainer=cpu (or trainer=ddp_sim for DDP as 2 CPU processes)"
    raise ConfigError("trainer.accelerator", accel, f"this machine has no CUDA GPU{via}: torch.cuda.is_available() "
                      "is False, so the trainer cannot start.",
                      f"{fix}; to send GPU jobs to a cluster from here, use -m hydra/launcher=slurm.")


def check_launcher(cfg: DictConfig, launcher: str) -> None:
    """A SLURM launcher (``hydra/launcher=slurm``) on a machine without SLURM's ``sbatch``/``srun``:
    submitit would fail at the first job with a traceback."""
    import shutil

    if not launcher.endswith("SlurmLauncher"):
        return
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
    if not missing:
        return
    choice = OmegaConf.select(cfg, "hydra.runtime.choices.hydra/launcher", default=None) or launcher.rsplit(".", 1)[-1]
    raise ConfigError(
        "hydra/launcher", choice,
        f"this launcher submits every job of the sweep to SLURM, but SLURM's {' and '.join(missing)} "
        f"{'is' if len(missing) == 1 else 'are'} not on the PATH of this machine (no SLURM client here).",
        "run the sweep from a SLURM login node (or put sbatch/srun on the PATH), or use "
        "hydra/launcher=submitit_local to try the same submitit launch on this machine (or drop hydra/launcher to "
        "run the jobs one after another here).",
    )


def check_node_launcher(cfg: DictConfig, gpus: list[str] | None = None) -> None:
    """``hydra/launcher=node``: its slots possible on this machine (GPUs that exist, ``gpus_per_job``
    within them, counts of at least 1), and the trainer using what each job sees: GPU slots with a GPU
    trainer whose ``devices`` match ``gpus_per_job`` (no DDP over a single GPU), CPU slots
    (``devices=cpu``) with a CPU trainer. ``gpus``: the ``CUDA_VISIBLE_DEVICES`` entries of the
    machine's GPUs (default: what this process sees). Submitit itself: :mod:`tgp.checks.extras`."""
    from hydra_plugins.tgp_launcher.slots import SlotError, plan_slots

    def setting(key, default):
        return _plain(OmegaConf.select(cfg, f"hydra.launcher.{key}", default=default))

    devices, per_job = setting("devices", "auto"), setting("gpus_per_job", 1)
    try:
        slots = plan_slots(devices, per_job, setting("jobs_per_gpu", 1), setting("cpu_jobs", "auto"),
                           bool(setting("pin_cpus", True)), gpus=gpus)
    except SlotError as e:
        raise ConfigError(e.setting, e.value, e.problem, e.fix) from None
    accel = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto") or "auto").lower()
    choice = OmegaConf.select(cfg, "hydra.runtime.choices.trainer", default=None)
    trainer = f"trainer={choice}" if choice else f"trainer.accelerator={accel}"
    if slots[0].gpus is None:  # CPU slots
        if devices == "cpu" and accel in ("gpu", "cuda"):
            raise ConfigError("trainer.accelerator", accel, "hydra.launcher.devices=cpu runs the jobs side by side on "
                              f"CPU cores with CUDA hidden from them, but {trainer} trains on a GPU.",
                              "use trainer=cpu with devices=cpu, or hydra.launcher.devices=auto to give each job a GPU.")
        return  # devices=auto without a GPU: check_device explains a GPU trainer
    n_gpus = len({g for s in slots for g in s.gpus})
    if accel == "cpu":
        raise ConfigError("trainer.accelerator", accel, f"hydra/launcher=node gives each job {per_job} of this "
                          f"machine's {n_gpus} GPU(s), but {trainer} trains on the CPU, so the GPUs would idle.",
                          "use trainer=gpu (one GPU a job), or trainer=ddp with hydra.launcher.gpus_per_job=2 or "
                          "more; to run CPU jobs side by side instead, hydra.launcher.devices=cpu.")
    want = _plain(OmegaConf.select(cfg, "trainer.devices", default=1))
    if isinstance(want, list):
        uses = len(want) if all(isinstance(i, int) and 0 <= i < per_job for i in want) else None
    elif str(want) in ("-1", "auto"):
        uses = per_job
    else:
        uses = int(want) if str(want).isdigit() else None
    if uses != per_job:
        outcome = "cannot use these devices" if uses is None or uses > per_job else "would leave some of them idle"
        raise ConfigError("trainer.devices", want, f"each job of hydra/launcher=node sees {per_job} GPU(s) "
                          f"(hydra.launcher.gpus_per_job={per_job}, numbered 0-{per_job - 1} inside the job), so "
                          f"the trainer {outcome}.",
                          f"set trainer.devices={per_job} (or -1: all the job's GPUs), or "
                          f"hydra.launcher.gpus_per_job={want if isinstance(want, int) and want > 0 else 1}.")
    name = strategy_name(cfg)
    if per_job == 1 and "ddp" in name:
        raise ConfigError(trainer.split("=")[0] if choice else "trainer.strategy", choice or name,
                          "DDP inside a job runs over the GPUs that job sees, and hydra/launcher=node gives each job "
                          "one (hydra.launcher.gpus_per_job=1): DDP over a single GPU only adds its overhead.",
                          "use trainer=gpu with hydra/launcher=node (one job per GPU, the fastest for small models); "
                          "or hydra.launcher.gpus_per_job=2 or more for DDP inside each job; or drop "
                          "hydra/launcher=node to run the jobs one after another, each over every GPU with trainer=ddp.")
