"""The job's settings checked in the job, before it writes anything: one-paragraph errors (setting, value,
fix), exit 2.

:func:`validate_job` runs once per job, in :func:`tgp.pipeline.prepare_job`, after the data and an
untrained student are built and before the job's folder is written (its ``.hydra/``, ``run.log``, any
stage). Checks that need only the command line run earlier, in :func:`tgp.checks.precheck.precheck`.
"""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf

from tgp.errors import ConfigError


def validate_job(cfg: DictConfig, spec, dm, student) -> None:
    """Checks that need the composed config, the method's spec, the datamodule and an instantiated student,
    each run once: the method against the data (``spec.data_check``), the student and the teacher config
    against the data (``dm.check_model``, ``dm.check_net_config``: a text model reads the data's token ids),
    the method's settings (types, then its own ``spec.check``), epoch counts, ``stop_after``, the sparsity,
    the batch split, ``pruning.*`` against the method and the student, ``compile``."""
    from tgp.lit.compiled import check_compile
    from tgp.pruning.mask import prunable_parameters
    from tgp.pruning.threshold import check_sparsity

    if dm is not None:  # None: the settings alone are checked (tests of the setting checks)
        check_method_fits_data(spec, dm)
        dm.check_model(student, "model")
        if spec.uses_teacher:  # trained here or loaded (teacher.checkpoint): the config is its architecture
            dm.check_net_config(cfg.teacher.net, "teacher.net")
    spec.check_settings(cfg.method)
    check_epochs(cfg, spec)
    check_stop_after(cfg, spec)
    check_sparsity(OmegaConf.select(cfg, "pruning.sparsity"))
    check_batch_size(cfg)
    check_schedule(cfg)
    exclude = cfg.pruning.exclude
    if not OmegaConf.is_list(exclude):  # a string would be read character by character
        raise ConfigError("pruning.exclude", exclude, "must be a list of module-name patterns.",
                          f"write it as a list, e.g. 'pruning.exclude=[{exclude}]' (quotes for the shell).")
    prunable_parameters(student, list(exclude))  # raises on a pattern that matches nothing
    check_mask(cfg, spec, student)
    check_sanity(cfg, spec)
    check_keep_class_rows(cfg, spec)
    check_compile(cfg)  # compile_mode, and the compiler inductor needs with compile=true
    if spec.check is not None:  # the method's own settings, after the shared ones it may rely on
        spec.check(cfg, dm)


def check_schedule(cfg: DictConfig) -> None:
    """``schedule.kind`` names a schedule (a typo would otherwise train at a constant learning rate) and
    ``schedule.warmup_epochs`` is a number of epochs >= 0."""
    from tgp.lit.classifier import SCHEDULE_KINDS

    kind = OmegaConf.select(cfg, "schedule.kind")
    if kind not in SCHEDULE_KINDS:
        raise ConfigError("schedule.kind", kind, f"is not a learning-rate schedule; tgp has {', '.join(SCHEDULE_KINDS)}.",
                          "set schedule.kind to one of them (e.g. schedule.kind=cosine).")
    warmup = OmegaConf.select(cfg, "schedule.warmup_epochs", default=0)
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or warmup < 0:
        raise ConfigError("schedule.warmup_epochs", warmup, "must be a number of epochs >= 0.",
                          "use e.g. schedule.warmup_epochs=0 (no warm-up) or 1.")


def check_method_fits_data(spec, dm) -> None:
    """The method runs on this data (:meth:`~tgp.methods.MethodSpec.unsupported`), or a paragraph naming the
    methods that do."""
    reason = spec.unsupported(dm)
    if reason is None:
        return
    from tgp.methods import methods_for

    able = methods_for(dm)
    raise ConfigError("method", spec.name, reason,
                      f"use a method that runs on {getattr(dm, 'name', 'this data')}: {', '.join(able)}.")


def check_job_launch(cfg: DictConfig, multirun: bool, launcher: str) -> None:
    """The launch mode (:func:`tgp.checks.hardware.check_launch`) of a job that runs on another machine than
    the command line (SLURM, submitit): there the precheck could not see its processes or GPUs."""
    from tgp.checks.hardware import check_launch
    from tgp.checks.precheck import launched_here

    if not launched_here(multirun, launcher):
        check_launch(cfg)


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
    """Processes a stage's fit runs in: the devices × trainer.num_nodes under a DDP strategy, else 1."""
    from tgp.checks.hardware import device_count, strategy_name

    if not any(k in strategy_name(cfg) for k in ("ddp", "fsdp", "deepspeed")):
        return 1
    nodes = OmegaConf.select(cfg, "trainer.num_nodes", default=1) or 1
    return max(device_count(cfg), 1) * max(int(nodes), 1)


def check_batch_size(cfg: DictConfig) -> None:
    """``data.batch_size`` is the global batch: it must split evenly over the DDP processes."""
    batch = OmegaConf.select(cfg, "data.batch_size", default=None)
    if batch is None:
        return
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ConfigError("data.batch_size", batch, "a batch holds a whole number of samples, at least 1.",
                          "use e.g. data.batch_size=128.")
    from tgp.data.base import per_rank_batch

    per_rank_batch(batch, world_size(cfg))  # raises when it does not divide


def one_shot_methods() -> list[str]:
    """The methods whose mask comes from a one-shot prune stage (``MethodSpec.one_shot``), sorted."""
    from tgp.methods import load_all

    return [n for n, s in sorted(load_all().items()) if s.one_shot]


def mask_taking_methods() -> list[str]:
    """The methods whose score a given ``pruning.mask`` may replace (``MethodSpec.accepts_mask``), sorted."""
    from tgp.methods import load_all

    return [n for n, s in sorted(load_all().items()) if s.accepts_mask]


def check_sanity(cfg: DictConfig, spec) -> None:
    """``pruning.sanity``: a known variant (:mod:`tgp.pruning.sanity`), for a method whose mask comes from a one-shot
    prune stage (``MethodSpec.one_shot``), and not combined with settings it would silently ignore."""
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
    if not spec.one_shot:
        one_shot = one_shot_methods()
        raise ConfigError("pruning.sanity", value, f"method {spec.name} does not prune in one shot; sanity-check "
                          "variants are defined for one-shot methods only.",
                          f"use pruning.sanity with one of {', '.join(one_shot)}, or drop it.")
    pretrained = OmegaConf.select(cfg, "model.pretrained", default=None)
    if value == "reinit" and pretrained:
        # A pretrained student is built from its checkpoint whatever the seed: "reinit" would train the mask
        # from the same pretrained weights, and its row would claim a fresh initialization it never had.
        raise ConfigError("pruning.sanity", value, f"the student starts from pretrained weights "
                          f"(model.pretrained={pretrained!r}), so a re-initialized start would be those same "
                          "weights, not a fresh random initialization.",
                          "use pruning.sanity=layer_shuffle, invert, random_uniform or random_erk with a pretrained "
                          "model, or a model built from its config (e.g. model=bert_tiny) for reinit.")
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
    if not spec.one_shot:
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
        accepting = mask_taking_methods()
        raise ConfigError("pruning.mask", path, f"method {spec.name} computes its own masks.",
                          f"use pruning.mask with one of {', '.join(accepting)}, or drop it.")
    from pathlib import Path

    from tgp.errors import CheckpointMismatchError
    from tgp.pruning.mask import load_mask

    if not Path(str(path)).is_file():
        raise CheckpointMismatchError(
            f"pruning.mask={path!r}: there is no such file (relative paths are relative to the folder the command "
            f"is started in, here {Path.cwd()}). Fix: point to a mask.pt written by tgp for this model, e.g. "
            "<run_dir>/mask.pt (the final mask of a finished run).")
    try:
        load_mask(path, student)
    except CheckpointMismatchError as e:
        problem, _, fix = str(e).partition(" Fix: ")
        raise CheckpointMismatchError(f"pruning.mask={path!r}: {problem} Fix: {fix or 'point to a mask made for this model.'}") from None
    except Exception as e:  # noqa: BLE001 - torch.load of a file that is no torch file at all
        raise CheckpointMismatchError(
            f"pruning.mask={path!r}: the file cannot be read as a mask ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            "Fix: point to a mask.pt written by tgp for this model (<run_dir>/mask.pt).") from None
