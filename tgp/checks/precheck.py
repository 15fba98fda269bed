"""The command line checked before Hydra runs anything: config composition errors (unknown group
options, misspelled keys, ``+key`` additions), output folders that cannot be written, a GPU trainer
without CUDA, DDP launch modes that cannot run a multi-stage job, a cluster launcher without its
cluster. Each problem is one :class:`~tgp.errors.ConfigError` paragraph (exit 2) and nothing is
created. :func:`precheck` is what ``tgp-run`` calls first; the job-level checks that need the data
and a model are in :mod:`tgp.checks`.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tgp.errors import ConfigError, TGPError

from tgp.resources import CONFIG_DIR  # conf/ of a checkout, or the copy inside an installed wheel


# Strategies whose Lightning launcher re-runs the command line (sys.argv) in every other rank.
_RELAUNCHING = ("ddp", "fsdp", "deepspeed")


def check_launch(cfg: DictConfig) -> None:
    """Refuse the DDP launch modes that cannot run a multi-stage job correctly.

    A job runs several stages, each a fresh ``Trainer.fit``; ``ddp_spawn`` starts the rank
    processes per fit, so every rank runs exactly the stage at hand. Lightning's ``ddp``
    launcher instead re-runs the whole command line in every other rank: that rank would run
    the whole pipeline from its first stage (and under ``-m`` the whole sweep), waiting on
    locks the first rank holds. Ranks started from outside (torchrun, srun with several tasks)
    do the same. All three are refused here, before anything runs.
    """
    import os

    world = os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or "1"
    if world.isdigit() and int(world) > 1:
        raise ConfigError(
            "launcher", f"{world} processes started from outside (torchrun/srun)",
            "tgp starts its DDP processes itself, once per stage (ddp_spawn); ranks started from outside would each "
            "run the whole multi-stage job.",
            "start one process per job (SLURM: ntasks_per_node=1) with trainer=ddp, which uses every GPU of the node.",
        )
    strategy = OmegaConf.select(cfg, "trainer.strategy", default="auto")
    name = str(strategy.get("_target_", "")) if isinstance(strategy, DictConfig) else str(strategy or "auto")
    name = name.lower()
    spawning = any(k in name for k in ("spawn", "fork", "notebook"))
    relaunching = not spawning and any(name.startswith(p) or f".{p}" in name for p in _RELAUNCHING)
    if name == "auto":  # Lightning picks `ddp` (subprocess launcher) for more than one device
        devices = OmegaConf.select(cfg, "trainer.devices", default=1)
        accel = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
        if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
            many = len(devices) > 1
        elif str(devices) in ("-1", "auto"):
            import torch

            many = accel != "cpu" and torch.cuda.device_count() > 1
        else:
            many = int(devices) > 1
        relaunching = many
    if relaunching:
        raise ConfigError(
            "trainer.strategy", strategy,
            "Lightning's `ddp` launcher re-runs the whole command line in every other rank: there it would re-run "
            "every stage of the job (and under Hydra multirun, -m, the whole sweep), with wrong results or a hang.",
            "use trainer.strategy=ddp_spawn (trainer=ddp on GPUs, trainer=ddp_sim on the CPU do).",
        )


# -- before Hydra: the command line against the config tree, the output folders, the device -------
_MAX_JOBS_COMPOSED = 64  # a sweep with more group-option combinations composes each option once instead


def precheck(argv: list[str], *, cluster: bool = False) -> None:
    """Refuse what makes the whole job (or sweep) impossible, before Hydra creates any folder.

    * the command line composes: config group options exist (``method=foo``), keys exist
      (``prunning.sparsity=0.5``), no ``+key`` adds a key that nothing reads, and under ``-m`` every
      combination of the swept group options composes;
    * the run (or sweep) folder, ``paths.log_dir`` and ``paths.stage_store`` can be created and written;
    * ``trainer.accelerator=gpu`` only where CUDA is available, and :func:`check_launch` (local launcher);
    * with ``cluster`` (as ``tgp-run`` calls it): a SLURM launcher only where SLURM's commands are
      (:func:`check_launcher`). Off by default so that a cluster command line can be checked anywhere.

    ``--help``, ``--hydra-help``, ``--info``, ``--version`` and ``--config-path/--config-dir`` go to Hydra
    untouched; ``--cfg`` checks the composition only (and is refused with ``-m``, which Hydra cannot
    combine). Checks that need the method, the data or the model run in :func:`tgp.checks.validate_job`,
    before the first stage. Costs one compose per checked job.
    """
    args = _parse_args(argv)
    if args is None:
        return
    if args.cfg is not None and args.multirun:  # Hydra's own refusal is a ValueError traceback
        raise ConfigError("--cfg", args.cfg, "Hydra prints the configuration of one job, so --cfg cannot be combined "
                          "with -m/--multirun.", "drop -m and give each swept key one of its values (e.g. "
                          "pruning.sparsity=0.5 instead of 0.5,0.8) to print that job's configuration.")
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name="run"):
        loader = GlobalHydra.instance().config_loader()
        parser = OverridesParser.create(config_loader=loader)
        overrides = _parse_overrides(parser, args.overrides)
        jobs = _jobs(overrides, loader, bool(args.multirun))
        checked: set = set()
        for job, label in jobs:
            try:
                cfg = _compose(args.config_name or "config", job, parser, loader)
            except ConfigError as e:
                if not label:
                    raise
                raise ConfigError(e.setting, e.value, f"(in the sweep's jobs with {label}) {e.problem}", e.fix) from None
            if args.cfg is not None:  # printing the config needs no folder and no device
                continue
            multirun = bool(args.multirun) or str(OmegaConf.select(cfg, "hydra.mode", default="")).endswith("MULTIRUN")
            _check_outputs(cfg, multirun, checked)
            launcher = str(OmegaConf.select(cfg, "hydra.launcher._target_", default="") or "")
            if multirun and cluster:
                check_launcher(cfg, launcher)
            if multirun and launcher.endswith("NodeLauncher"):
                check_node_launcher(cfg)
            if not multirun or launcher.endswith(("BasicLauncher", "NodeLauncher")):  # jobs run on this machine
                check_device(cfg)
                check_launch(cfg)


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
    """``hydra/launcher=node``: submitit installed, its slots possible on this machine (GPUs that exist,
    ``gpus_per_job`` within them, counts of at least 1), and the trainer using what each job sees:
    GPU slots with a GPU trainer whose ``devices`` match ``gpus_per_job`` (no DDP over a single GPU),
    CPU slots (``devices=cpu``) with a CPU trainer. ``gpus``: the ``CUDA_VISIBLE_DEVICES`` entries of
    the machine's GPUs (default: what this process sees)."""
    import importlib.util

    from hydra_plugins.tgp_launcher.slots import SlotError, plan_slots

    if importlib.util.find_spec("submitit") is None:
        raise ConfigError("hydra/launcher", "node", "this launcher runs each job through submitit's local executor, "
                          "and submitit is not installed.",
                          "install the `cluster` extra (pip install 'tgp[cluster]'), or drop hydra/launcher to run "
                          "the jobs one after another.")

    def setting(key, default):
        value = OmegaConf.select(cfg, f"hydra.launcher.{key}", default=default)
        return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value

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
    want = OmegaConf.select(cfg, "trainer.devices", default=1)
    want = OmegaConf.to_container(want) if OmegaConf.is_config(want) else want
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
    strategy = OmegaConf.select(cfg, "trainer.strategy", default="auto")
    name = str(strategy.get("_target_", "")) if isinstance(strategy, DictConfig) else str(strategy or "auto")
    if per_job == 1 and "ddp" in name.lower():
        raise ConfigError(trainer.split("=")[0] if choice else "trainer.strategy", choice or name,
                          "DDP inside a job runs over the GPUs that job sees, and hydra/launcher=node gives each job "
                          "one (hydra.launcher.gpus_per_job=1): DDP over a single GPU only adds its overhead.",
                          "use trainer=gpu with hydra/launcher=node (one job per GPU, the fastest for small models); "
                          "or hydra.launcher.gpus_per_job=2 or more for DDP inside each job; or drop "
                          "hydra/launcher=node to run the jobs one after another, each over every GPU with trainer=ddp.")


def _parse_args(argv: list[str]):
    """Hydra's own command-line parser; None when Hydra should handle the command line alone."""
    import contextlib
    import io

    from hydra._internal.utils import get_args_parser

    if "--version" in argv:
        return None
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            args = get_args_parser().parse_args(argv)
    except SystemExit:  # a malformed flag: Hydra prints its usage
        return None
    if (args.help or args.hydra_help or args.shell_completion or args.info or args.experimental_rerun
            or args.config_path or args.config_dir):
        return None
    return args


def _parse_overrides(parser, strings: list[str]) -> list:
    from hydra.errors import OverrideParseException


    parsed = []
    for s in strings:
        try:
            parsed.extend(parser.parse_overrides([s]))
        except OverrideParseException as e:
            key, _, value = s.partition("=")
            raise ConfigError(key, value, f"Hydra cannot parse this override ({_one_line(e)}).",
                              "quote values with special characters for the shell and for Hydra, e.g. "
                              "\"key='a b'\" or 'key=[1,2]' (grammar: https://hydra.cc/docs/advanced/override_grammar/basic/).") from None
    return parsed


def _override_string(o, value: str | None = None) -> str:
    if value is not None:
        return f"{o.get_key_element()}={value}"
    return o.input_line or f"{o.get_key_element()}={o.get_value_element_as_str()}"


def _jobs(overrides: list, loader, multirun: bool) -> list[tuple[list[str], str]]:
    """The override lists to compose: one job, or under ``-m`` the sweep's combinations of group options.

    Swept plain values (``pruning.sparsity=0.5,0.9``) cannot change which keys exist, so only their
    first value is composed; swept group options (``method=tgp,imp``) can, so their combinations are
    composed (each option once if there are more than ``_MAX_JOBS_COMPOSED``). Each job comes with a
    label naming its swept group options ("" when nothing is swept).
    """
    import itertools

    if not multirun:
        return [([_override_string(o) for o in overrides], "")]
    base, group_sweeps = [], []
    for i, o in enumerate(overrides):
        if not o.is_sweep_override():
            base.append(_override_string(o))
            continue
        if not o.is_discrete_sweep():
            return []  # interval sweeps are for other sweepers: Hydra reports them
        values = [_override_string(o, v) for v in o.sweep_string_iterator()]
        if not values:
            return []
        base.append(values[0])
        if loader.repository.group_exists(o.key_or_group):
            group_sweeps.append((i, values))
    n = 1
    for _, values in group_sweeps:
        n *= len(values)
    if n <= _MAX_JOBS_COMPOSED:
        jobs = []
        for combo in itertools.product(*(values for _, values in group_sweeps)):
            job = list(base)
            for (i, _), s in zip(group_sweeps, combo):
                job[i] = s
            jobs.append((job, ", ".join(combo)))
        return jobs
    jobs = [(base, ", ".join(base[i] for i, _ in group_sweeps))]
    for i, values in group_sweeps:
        jobs += [([*base[:i], s, *base[i + 1:]], s) for s in values[1:]]
    return jobs


def _compose(config_name: str, job: list[str], parser, loader) -> DictConfig:
    from hydra import compose
    from hydra.errors import HydraException

    try:
        cfg = compose(config_name=config_name, overrides=job, return_hydra_config=True)
    except HydraException as e:
        raise _composition_error(e, config_name, job, parser, loader) from None
    _check_added_keys(cfg, config_name, job, parser, loader)
    return cfg


def _find(job: list[str], parser, key: str):
    for o in parser.parse_overrides(job):
        if o.key_or_group == key:
            return o
    return None


def _shown(o) -> object:
    if o is None:
        return None
    value = o.value()
    return o.get_value_element_as_str() if o.is_sweep_override() else value


def _composition_error(e: Exception, config_name: str, job: list[str], parser, loader):
    """Hydra's composition error as one of our paragraphs (setting, value, problem, fix)."""
    import re

    from hydra.errors import MissingConfigException


    text = str(e)
    missing = re.search(r"Could not find '([^']+)'", text)
    if isinstance(e, MissingConfigException) and missing and "/" in missing.group(1):
        group, option = missing.group(1).rsplit("/", 1)
        options = [o for o in loader.get_group_options(group) if not o.startswith("_")]
        if options:
            close = _close(option, options)
            hint = f"did you mean {group}={close}? " if close else ""
            return ConfigError(group, option, f"config group '{group}' has no option '{option}' (no conf/{group}/{option}.yaml).",
                               f"{hint}use {group}=<option> with one of: {', '.join(options)}.")
    unknown = (re.search(r"Could not override '([^']+)'", text)
               or re.search(r"Could not delete from config\. '([^']+)' does not exist", text))
    if unknown:
        key = unknown.group(1)
        o = _find(job, parser, key)
        prefix = "~" if o is not None and o.is_delete() else ""
        rest = [s for s in job if o is None or s != o.input_line]
        close = _close(key, _setting_names(_compose_quietly(config_name, rest), key))
        closed = ("no such setting. tgp's configs are closed: every setting already exists in conf/ with its default, "
                  "so a key that does not exist is a typo, not a new setting (Hydra's `+key=...` would add a key that "
                  "nothing reads).")
        if prefix:  # `~key`: there is no value to show
            hint = f"did you mean ~{close}? " if close else "drop it; "
            return TGPError(f"~{key}: {closed} Fix: {hint}`python -m tgp.run --cfg job` prints every setting.")
        hint = f"did you mean {close}={o.get_value_element_as_str()}? " if close and o is not None else ""
        return ConfigError(key, _shown(o), closed, f"{hint}`python -m tgp.run --cfg job` prints every setting.")
    exists = re.search(r"An item is already at '([^']+)'", text)
    if exists:
        key = exists.group(1)
        o = _find(job, parser, key)
        return ConfigError(key, _shown(o), "the setting exists already, so it cannot be added with `+`.",
                           f"drop the +: {key}={o.get_value_element_as_str() if o else '...'}.")
    ambiguous = re.search(r"Ambiguous value for argument '([^'=]+)=([^']*)'", text)
    if ambiguous:
        key, value = ambiguous.groups()
        return ConfigError(key, value, "a comma-separated value is a sweep, which needs -m.",
                           f"add -m to run one job per value; for a list write '{key}=[{value}]', for a string "
                           f"\"{key}='{value}'\".")
    primary = re.search(r"Cannot find primary config '([^']+)'", text)
    if primary:
        return ConfigError("--config-name", primary.group(1), f"there is no conf/{primary.group(1)}.yaml.",
                           "drop --config-name (tgp's root config is conf/config.yaml).")
    return ConfigError("overrides", " ".join(job), f"the config does not compose: {_one_line(e)}",
                       "see `python -m tgp.run --help` for the config groups and `--cfg job` for the settings.")


def _check_added_keys(cfg: DictConfig, config_name: str, job: list[str], parser, loader) -> None:
    """``+key=...``/``++key=...`` that adds a key nothing reads is refused (kwargs of a ``_target_`` node pass)."""

    for o in parser.parse_overrides(job):
        if not (o.is_add() or o.is_force_add()) or o.is_hydra_override() or o.package is not None:
            continue
        key = o.key_or_group
        if loader.repository.group_exists(key):
            continue
        parent = OmegaConf.select(cfg, key.rsplit(".", 1)[0], default=None) if "." in key else None
        if isinstance(parent, DictConfig) and "_target_" in parent:  # extra keyword arguments of what it builds
            continue
        base = _compose_quietly(config_name, [s for s in job if s != o.input_line])
        if o.is_force_add() and base is not None and OmegaConf.select(base, key, default=_ABSENT) is not _ABSENT:
            continue  # ++ on an existing key is a plain override
        close = _close(key, _setting_names(base, key))
        hint = f"did you mean {close}={o.get_value_element_as_str()}? " if close else "drop it; "
        raise ConfigError(
            key, _shown(o),
            "no such setting: this `+` adds a key that nothing in tgp reads. tgp's configs are closed: every setting "
            "already exists in conf/ with its default, so no `+key` is needed.",
            f"{hint}`python -m tgp.run --cfg job` prints every setting.")


_ABSENT = object()


def _compose_quietly(config_name: str, job: list[str]) -> DictConfig | None:
    from hydra import compose

    for overrides in (job, []):
        try:
            return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
        except Exception:  # noqa: BLE001 - only used for suggestions
            continue
    return None


def _setting_names(cfg: DictConfig | None, key: str) -> list[str]:
    """Every dotted key of the config (Hydra's own only when ``key`` is one of them)."""
    if cfg is None:
        return []
    container = OmegaConf.to_container(cfg, resolve=False)
    if not key.startswith("hydra"):
        container.pop("hydra", None)
    names: list[str] = []

    def walk(node, prefix):
        for k, v in node.items():
            name = f"{prefix}{k}"
            names.append(name)
            if isinstance(v, dict):
                walk(v, f"{name}.")

    walk(container, "")
    return names


def _close(word: str, candidates: list[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return match[0] if match else None


def _one_line(e: Exception) -> str:
    lines = [line.strip() for line in str(e).splitlines()]
    kept = []
    for line in lines:
        if line.startswith(("Config search path", "See https://hydra.cc")):
            break
        if line:
            kept.append(line)
    return " ".join(kept)


_FOLDER_FIXES = {
    "paths.log_dir": "set paths.log_dir to a folder you can write (runs, sweeps and the stage store go under it).",
    "paths.stage_store": "set paths.stage_store to a folder you can write, or paths.stage_store=null to keep the "
                         "stages inside the run folder.",
    "hydra.run.dir": "set hydra.run.dir to a folder you can write, or drop it (runs then go to paths.log_dir/runs).",
    "hydra.sweep.dir": "set hydra.sweep.dir to a folder you can write, or drop it (sweeps then go to paths.log_dir/sweeps).",
}


def _check_outputs(cfg: DictConfig, multirun: bool, checked: set) -> None:
    """Every folder the job creates can be created and written (tried with a temporary folder, removed again)."""
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
    import os
    import tempfile


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


def check_device(cfg: DictConfig) -> None:
    """``trainer.accelerator=gpu|cuda`` on a machine without CUDA (Lightning would stop with a traceback)."""
    accel = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto") or "auto").lower()
    if accel not in ("gpu", "cuda"):
        return
    import torch

    if torch.cuda.is_available():
        return

    strategy = OmegaConf.select(cfg, "trainer.strategy", default="auto")
    name = str(strategy.get("_target_", "")) if isinstance(strategy, DictConfig) else str(strategy)
    choice = OmegaConf.select(cfg, "hydra.runtime.choices.trainer", default=None)
    via = f" (trainer={choice})" if choice and choice not in ("cpu", "ddp_sim", "default") else ""
    if "ddp" in name.lower():
        fix = "use trainer=ddp_sim to run DDP as 2 CPU processes (gloo), or trainer=cpu for one process"
    else:
        fix = "use trainer=cpu (or trainer=ddp_sim for DDP as 2 CPU processes)"
    raise ConfigError("trainer.accelerator", accel, f"this machine has no CUDA GPU{via}: torch.cuda.is_available() "
                      "is False, so the trainer cannot start.",
                      f"{fix}; to send GPU jobs to a cluster from here, use -m hydra/launcher=slurm.")
