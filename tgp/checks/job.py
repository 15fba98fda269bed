"""Every setting checked before the first stage runs: one-paragraph errors (setting, value, fix), exit 2.

:func:`validate_job` runs in :func:`tgp.pipeline.run_pipeline` after the data and an untrained student
are built and before any stage folder exists. Checks that need only the command line (config groups,
unknown keys, output folders, the device) run earlier, in :func:`tgp.precheck.precheck`.
"""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf

from tgp.errors import ConfigError
from tgp.pruning.mask import prunable_parameters


def validate_job(cfg: DictConfig, spec, dm, student) -> None:
    """Checks that need the composed config, the method's spec, the datamodule and an instantiated student."""
    spec.check_settings(cfg.method)
    check_epochs(cfg, spec)
    check_stop_after(cfg, spec)
    from tgp.pruning.threshold import check_sparsity

    check_sparsity(OmegaConf.select(cfg, "pruning.sparsity"))
    check_batch_size(cfg)
    exclude = cfg.pruning.exclude
    if not OmegaConf.is_list(exclude):  # a string would be read character by character
        raise ConfigError("pruning.exclude", exclude, "must be a list of module-name patterns.",
                          f"write it as a list, e.g. 'pruning.exclude=[{exclude}]' (quotes for the shell).")
    prunable_parameters(student, list(exclude))  # raises on a pattern that matches nothing
    check_mask(cfg, spec, student)
    check_sanity(cfg, spec)
    check_keep_class_rows(cfg, spec)
    from tgp.lit.compiled import check_compile

    check_compile(cfg)  # compile / compile_mode, and the compiler inductor needs with compile=true


def _source(cfg: DictConfig, path: str) -> str:
    """The setting a user changes for ``path``: itself, or the key it plainly interpolates (``${retrain.epochs}``)."""
    seen = {path}
    while True:
        parent, _, key = path.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig) or key not in node:
            return path
        raw = node._get_node(key)._value()
        match = re.fullmatch(r"\$\{([\w.]+)\}", raw) if isinstance(raw, str) else None
        if match is None or match.group(1) in seen:
            return path
        path = match.group(1)
        seen.add(path)


def check_epochs(cfg: DictConfig, spec) -> None:
    """Every epoch count the method trains for is an int ≥ 1 (and the teacher's, when it is trained here)."""
    paths = list(spec.epochs)
    if spec.uses_teacher and not OmegaConf.select(cfg, "teacher.checkpoint", default=None):
        paths.insert(0, "teacher.epochs")  # the teacher trains first
    for path in paths:
        value = OmegaConf.select(cfg, path, default=None)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            continue
        setting = _source(cfg, path)
        what = "a whole number of epochs" if not isinstance(value, int) or isinstance(value, bool) else "at least 1"
        if path == "teacher.epochs":
            problem = f"method {spec.name} trains the dense teacher for this many epochs (teacher.checkpoint is unset)"
            fix = f"set {setting} to 1 or more, or load a trained teacher with teacher.checkpoint=<file>."
        else:
            via = f" ({path} is ${{{setting}}})" if setting != path else ""
            problem = f"a stage of method {spec.name} trains for this many epochs{via}"
            fix = f"set {setting} to 1 or more."
        raise ConfigError(setting, value, f"{problem}; it must be {what}.", fix)


def check_stop_after(cfg: DictConfig, spec) -> None:
    """``stop_after`` names a stage the method runs (a typo would otherwise run the whole job)."""
    stop = OmegaConf.select(cfg, "stop_after", default=None)
    if stop is None or spec.has_stage(str(stop)):
        return
    import difflib

    examples = [p.replace("*", "01") for p in spec.stages]
    close = difflib.get_close_matches(str(stop), examples, n=1, cutoff=0.6)
    hint = f"did you mean stop_after={close[0]}? " if close else ""
    stages = ", ".join(p.replace("*", "NN") for p in spec.stages)
    rounds = " (NN = round number: 01, 02, ...)" if any("*" in p for p in spec.stages) else ""
    raise ConfigError("stop_after", stop, f"method {spec.name} has no stage {stop!r}; its stages, in order, are: "
                      f"{stages}{rounds}.",
                      f"{hint}use stop_after=<one of its stages>, or drop it to run the whole job.")


def world_size(cfg: DictConfig) -> int:
    """Processes a stage's fit runs in: trainer.devices × trainer.num_nodes under a DDP strategy, else 1."""
    trainer = cfg.get("trainer") or {}
    strategy = trainer.get("strategy", "auto")
    name = str(strategy.get("_target_", "")) if isinstance(strategy, DictConfig) else str(strategy or "auto")
    if not any(k in name.lower() for k in ("ddp", "fsdp", "deepspeed")):
        return 1
    devices = trainer.get("devices", 1)
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        n = len(devices)
    elif str(devices) in ("-1", "auto"):
        import torch

        accel = str(trainer.get("accelerator", "auto")).lower()
        n = torch.cuda.device_count() if accel in ("gpu", "cuda", "auto") else 1
    elif isinstance(devices, str) and "," in devices:
        n = len([d for d in devices.split(",") if d.strip()])
    else:
        n = int(devices)
    return max(n, 1) * max(int(trainer.get("num_nodes", 1) or 1), 1)


def check_batch_size(cfg: DictConfig) -> None:
    """``data.batch_size`` is the global batch: it must split evenly over the DDP processes."""
    batch = OmegaConf.select(cfg, "data.batch_size", default=None)
    if batch is None:
        return
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ConfigError("data.batch_size", batch, "a batch holds a whole number of samples, at least 1.",
                          "use e.g. data.batch_size=128.")
    world = world_size(cfg)
    try:
        from tgp.data.base import per_rank_batch
    except ImportError:
        per_rank_batch = None
    if per_rank_batch is not None:
        per_rank_batch(batch, world)
    elif batch % world:
        raise ConfigError("data.batch_size", batch, f"is the global batch, split evenly over the {world} DDP "
                          f"processes, and does not divide by {world}.",
                          f"set data.batch_size to a multiple of {world}.")


def one_shot_methods() -> list[str]:
    """The methods whose mask comes from a one-shot prune stage (they take ``pruning.mask``), sorted."""
    from tgp.methods import load_all

    return [n for n, s in sorted(load_all().items()) if s.accepts_mask]


def check_sanity(cfg: DictConfig, spec) -> None:
    """``pruning.sanity``: a known variant (:mod:`tgp.pruning.sanity`), for a method whose mask comes from a one-shot
    prune stage (those that accept ``pruning.mask``), and not combined with settings it would silently ignore."""
    from tgp.pruning.sanity import RANDOM_VARIANTS, VARIANTS

    value = OmegaConf.select(cfg, "pruning.sanity", default=None)
    if value is None:
        return
    if value not in VARIANTS:
        import difflib

        close = difflib.get_close_matches(str(value), VARIANTS, n=1, cutoff=0.6)
        raise ConfigError("pruning.sanity", value, "no such sanity-check variant.",
                          (f"did you mean pruning.sanity={close[0]}? " if close else "")
                          + f"use null (the method itself) or one of: {', '.join(VARIANTS)}.")
    if not spec.accepts_mask:
        one_shot = one_shot_methods()
        raise ConfigError("pruning.sanity", value, f"method {spec.name} does not prune in one shot; sanity-check "
                          "variants are defined for one-shot methods only.",
                          f"use pruning.sanity with one of {', '.join(one_shot)}, or drop it.")
    if OmegaConf.select(cfg, "pruning.mask", default=None) and value in ("invert", *RANDOM_VARIANTS):
        raise ConfigError("pruning.sanity", value, "this variant needs the method's score or ignores any mask, so "
                          f"the given pruning.mask={cfg.pruning.mask!r} would be ignored.",
                          "drop pruning.mask, or use pruning.sanity=layer_shuffle or reinit with it.")
    if value in RANDOM_VARIANTS and float(OmegaConf.select(cfg, "pruning.min_layer_density", default=0.0) or 0.0) > 0:
        raise ConfigError("pruning.sanity", value, "this variant sets every layer's density itself, so "
                          f"pruning.min_layer_density={cfg.pruning.min_layer_density} would be ignored.",
                          "set pruning.min_layer_density=0 for this variant.")


def check_keep_class_rows(cfg: DictConfig, spec) -> None:
    """``pruning.keep_class_rows=true`` is a rule of the one-shot global threshold: refused where no such
    threshold makes the mask (IMP's, COLT's and SDP's own pruning; a given ``pruning.mask``; a random
    sanity variant), which would otherwise ignore it silently."""
    from tgp.pruning.sanity import RANDOM_VARIANTS

    if not OmegaConf.select(cfg, "pruning.keep_class_rows", default=False):
        return
    if not spec.accepts_mask:
        one_shot = one_shot_methods()
        raise ConfigError("pruning.keep_class_rows", True, f"method {spec.name} makes its masks with its own pruning "
                          "rule, which does not keep a weight per class, so the setting would be ignored.",
                          f"use pruning.keep_class_rows with one of {', '.join(one_shot)}, or drop it.")
    if OmegaConf.select(cfg, "pruning.mask", default=None):
        raise ConfigError("pruning.keep_class_rows", True, f"the given pruning.mask={cfg.pruning.mask!r} is used as "
                          "it is, so the setting would be ignored.", "drop one of the two.")
    sanity = OmegaConf.select(cfg, "pruning.sanity", default=None)
    if sanity in RANDOM_VARIANTS:
        raise ConfigError("pruning.keep_class_rows", True, f"pruning.sanity={sanity} draws a random mask with fixed "
                          "per-layer counts, so the setting would be ignored.", "drop one of the two.")


def check_mask(cfg: DictConfig, spec, student) -> None:
    """``pruning.mask``: only for methods that take a mask, and the file must fit the student (checked now,
    not after the teacher and KD pretraining have trained)."""
    path = OmegaConf.select(cfg, "pruning.mask", default=None)
    if not path:
        return
    if not spec.accepts_mask:
        accepting = one_shot_methods()
        raise ConfigError("pruning.mask", path, f"method {spec.name} computes its own masks.",
                          f"use pruning.mask with one of {', '.join(accepting)}, or drop it.")
    from tgp.errors import CheckpointMismatchError
    from tgp.pruning.mask import load_mask

    from pathlib import Path

    if not Path(str(path)).is_file():
        raise CheckpointMismatchError(
            f"pruning.mask={path!r}: there is no such file (relative paths are relative to the folder the command "
            f"is started in, here {Path.cwd()}). Fix: point to a prune/mask.pt written by tgp for this model, e.g. "
            "<run_dir>/prune/mask.pt.")
    try:
        load_mask(path, student)
    except CheckpointMismatchError as e:
        problem, _, fix = str(e).partition(" Fix: ")
        raise CheckpointMismatchError(f"pruning.mask={path!r}: {problem} Fix: {fix or 'point to a mask made for this model.'}") from None
    except Exception as e:  # noqa: BLE001 - torch.load of a file that is no torch file at all
        raise CheckpointMismatchError(
            f"pruning.mask={path!r}: the file cannot be read as a mask ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            "Fix: point to a prune/mask.pt written by tgp for this model.") from None
