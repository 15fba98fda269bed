"""The command line checked before Hydra runs anything (what ``tgp-run`` calls first).

Each problem is one :class:`~tgp.errors.ConfigError` paragraph (exit 2) and nothing is created. The
checks that need the method, the data and the model run in the job, before it writes anything
(:func:`tgp.checks.job.validate_job`).
"""

from __future__ import annotations

from omegaconf import OmegaConf

from tgp.errors import ConfigError


def precheck(argv: list[str], *, cluster: bool = False) -> None:
    """Refuse what makes the whole job (or sweep) impossible, before Hydra creates any folder.

    * the command line composes (:mod:`tgp.checks.command_line`, :mod:`tgp.checks.composition`): config
      files are valid YAML (ours, ``--config-dir``'s, ``hydra.searchpath``'s), group options exist
      (``method=foo``), keys exist (``prunning.sparsity=0.5``, ``method=tgp method.rate=0.3``), no ``+key``
      adds a key that nothing reads, and under ``-m`` every combination of the swept group options composes;
    * the root config's own settings have their types (:mod:`tgp.checks.values`: ``seed=abc``), every
      swept value included;
    * options that need an optional extra have it (:mod:`tgp.checks.extras`: Optuna, submitit);
    * the run (or sweep) folder, ``paths.log_dir`` and ``paths.stage_store`` can be created and written
      (:mod:`tgp.checks.outputs`);
    * for jobs that run on this machine: ``trainer.accelerator=gpu`` only where CUDA is, DDP launch modes
      that can run a multi-stage job, the node launcher's slots (:mod:`tgp.checks.hardware`);
    * with ``cluster`` (as ``tgp-run`` calls it): a SLURM launcher only where SLURM's commands are. Off by
      default so that a cluster command line can be checked anywhere.

    ``--help``, ``--hydra-help``, ``--info``, ``--version`` and a relative ``--config-path`` go to Hydra
    untouched; ``--cfg`` checks the composition only (and is refused with ``-m``, which Hydra cannot
    combine). Costs one compose per checked job.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from tgp.checks.command_line import compose_job, hydra_session, parse_args, parse_overrides, sweep_jobs
    from tgp.checks.extras import check_extras
    from tgp.checks.hardware import check_device, check_launch, check_launcher, check_node_launcher
    from tgp.checks.outputs import check_outputs
    from tgp.checks.values import check_swept_values, check_values

    args = parse_args(argv)
    if args is None:
        return
    if args.cfg is not None and args.multirun:  # Hydra's own refusal is a ValueError traceback
        raise ConfigError("--cfg", args.cfg, "Hydra prints the configuration of one job, so --cfg cannot be combined "
                          "with -m/--multirun.", "drop -m and give each swept key one of its values (e.g. "
                          "pruning.sparsity=0.5 instead of 0.5,0.8) to print that job's configuration.")
    with hydra_session(args) as loader:
        parser = OverridesParser.create(config_loader=loader)
        overrides = parse_overrides(parser, args.overrides)
        check_swept_values(overrides)
        checked: set = set()
        for job, label in sweep_jobs(overrides, loader, bool(args.multirun)):
            try:
                cfg = compose_job(args.config_name or "config", job, parser, loader)
                check_values(cfg)
            except ConfigError as e:
                if not label:
                    raise
                raise ConfigError(e.setting, e.value, f"(in the sweep's jobs with {label}) {e.problem}", e.fix) from None
            if args.cfg is not None:  # printing the config needs no folder, extra or device
                continue
            multirun = bool(args.multirun) or str(OmegaConf.select(cfg, "hydra.mode", default="")).endswith("MULTIRUN")
            check_extras(cfg, multirun)
            check_outputs(cfg, multirun, checked)
            launcher = str(OmegaConf.select(cfg, "hydra.launcher._target_", default="") or "")
            if multirun and cluster:
                check_launcher(cfg, launcher)
            if multirun and launcher.endswith("NodeLauncher"):
                check_node_launcher(cfg)
            if launched_here(multirun, launcher):
                check_device(cfg)
                check_launch(cfg)


def launched_here(multirun: bool, launcher: str) -> bool:
    """Whether the job runs on this machine, where the precheck has checked its device and launch mode (the
    job checks its launch itself where it runs elsewhere: :func:`tgp.checks.job.check_job_launch`)."""
    return not multirun or launcher.endswith(("BasicLauncher", "NodeLauncher"))
