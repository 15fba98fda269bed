"""Console hygiene: one line per stage, no advertising, no warnings about things done on purpose.

At the default ``verbose=false`` the console shows tgp's and Hydra's own lines (one per stage, the
lock waits, the summary) and every library's warnings and errors; libraries' INFO lines (Lightning's
``GPU available: ...``, ``Loading `train_dataloader` ...``), the warnings Lightning repeats for every
stage and W&B's banners are kept off it. Hydra's job log (``<run_dir>/run.log``) still receives all
INFO lines, tgp's detail lines (``stage X: running in ...``) and the summary. ``verbose=true`` brings
everything back to the console. Hugging Face ``transformers`` and ``huggingface_hub`` (text models)
log through the same handlers (:func:`quiet_huggingface`): their warnings — a checkpoint's load report,
"You should probably TRAIN this model" — go to ``run.log`` only, and their progress bars ("Loading
weights") are off, unless ``verbose=true``.

Records of the ``tgp`` logger can carry ``extra=FILE_ONLY`` (never on the console: the summary,
which is printed as it is) or ``extra=DETAIL`` (on the console only with ``verbose=true``).
DDP-spawned ranks get the same settings through :class:`ConsoleSettings`, a callback that applies
them when it is unpickled there (before the rank logs anything).
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
import warnings

from lightning.pytorch.callbacks import Callback

from tgp.logs_hf import quiet_huggingface

FILE_ONLY = {"tgp_console": "never"}
DETAIL = {"tgp_console": "verbose"}

_LIGHTNING = ("lightning.pytorch", "lightning.fabric", "lightning")

# Warnings Lightning or torch give for every stage about things tgp does on purpose.
_ALWAYS_IGNORED = (
    r".*module\(s\) in eval mode at the start of training.*",  # the frozen teacher is in eval mode on purpose
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*smaller than the logging interval.*",
    r".*does not have many workers.*",
)
# Also known, but they may matter to someone debugging: back with verbose=true.
_QUIET_IGNORED = (
    r".*Checkpoint directory .* exists and is not empty.*",  # a stage folder holds attempts.json from the start
    r".*Experiment logs directory .* exists and is not empty.*",
    r".*torch\.distributed\.nn\.functional\.all_reduce is deprecated.*",  # AllReduceBatchNorm (ddp_sim)
    r".*Consider setting `persistent_workers=True`.*",
    r".*Using `DistributedSampler` with the dataloaders.*",  # the pruning stage's validate() under DDP
    r".*will save all targets and predictions in the buffer.*",  # torchmetrics' Spearman (STS-B): a dev set is small
)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip" not in record.getMessage()


# Loggers whose INFO lines belong on the console at the default verbosity (others: WARNING and up).
_CONSOLE_INFO = ("tgp", "hydra", "__main__")
# Libraries whose warnings are notes about things done on purpose (a pretrained checkpoint loaded under a
# new classification head): file-only below ERROR, unless verbose.
_FILE_ONLY_BELOW_ERROR = ("transformers", "huggingface_hub")


class _ConsoleFilter(logging.Filter):
    """On the console handlers: drop file-only records; unless verbose, also detail records and the
    records below WARNING of libraries (Lightning's per-stage lines, a plugin's import-time chatter)."""

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        where = getattr(record, "tgp_console", None)
        if where == "never":
            return False
        if self.verbose:
            return True
        if where == "verbose":
            return False
        library = record.name.split(".")[0]
        if library in _FILE_ONLY_BELOW_ERROR:
            return record.levelno >= logging.ERROR
        return record.levelno >= logging.WARNING or library in _CONSOLE_INFO


def _console_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


class _HeldLogs:
    """What :func:`held_file_logs` yields: ``discard()`` drops the held records instead of writing them."""

    def __init__(self) -> None:
        self.buffer = logging.handlers.BufferingHandler(capacity=1_000_000)
        self.kept = True

    def discard(self) -> None:
        self.kept = False


@contextlib.contextmanager
def held_file_logs():
    """Hold back the records meant for the root logger's file handlers (Hydra's job log, ``run.log``)
    while the job is checked: on leaving they are written there, unless ``discard()`` was called (a refused
    job, or a finished one a sweep skips, writes nothing into its folder). Console handlers see every
    record as it comes."""
    root = logging.getLogger()
    files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    for handler in files:
        root.removeHandler(handler)
    held = _HeldLogs()
    root.addHandler(held.buffer)
    try:
        yield held
    finally:
        root.removeHandler(held.buffer)
        for handler in files:
            root.addHandler(handler)
            if held.kept:
                for record in held.buffer.buffer:
                    if record.levelno >= handler.level:
                        handler.handle(record)
        held.buffer.buffer.clear()


def is_verbose(cfg) -> bool:
    from omegaconf import OmegaConf

    return bool(OmegaConf.select(cfg, "verbose", default=False))


def quiet_lightning(verbose: bool = False) -> None:
    """Route Lightning's messages through the root (Hydra's) handlers only, without its tips.

    ``verbose=False`` (what the entry point calls before the job's config is read; then
    :func:`configure_console` applies the job's ``verbose``): also keep libraries' INFO lines,
    Lightning's known warnings and W&B's banners off the console (see the module docstring);
    ``True``: everything on the console.
    """
    rooted = bool(logging.getLogger().handlers)
    for name in _LIGHTNING:
        logger = logging.getLogger(name)
        if rooted:
            for handler in list(logger.handlers):
                logger.removeHandler(handler)  # Hydra's root handlers print it already
            logger.propagate = True
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in rank_zero.filters):
        rank_zero.addFilter(_DropTips())
    for pattern in _ALWAYS_IGNORED:
        warnings.filterwarnings("ignore", message=pattern)
    for handler in _console_handlers():
        for f in [f for f in handler.filters if isinstance(f, _ConsoleFilter)]:
            handler.removeFilter(f)
        handler.addFilter(_ConsoleFilter(verbose))
    if not rooted:  # a DDP-spawned rank: Lightning prints through its own handlers
        for name in _LIGHTNING:
            logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    if verbose:
        for pattern in _QUIET_IGNORED:  # drop our quiet filters again (a verbose job after a quiet one)
            warnings.filters[:] = [f for f in warnings.filters
                                   if not (f[0] == "ignore" and getattr(f[1], "pattern", None) == pattern)]
        if os.environ.pop("TGP_SET_WANDB_SILENT", None):
            os.environ.pop("WANDB_SILENT", None)
    else:
        for pattern in _QUIET_IGNORED:
            warnings.filterwarnings("ignore", message=pattern)
        if "WANDB_SILENT" not in os.environ:  # W&B's banners and footer; tgp prints the sync hint itself
            os.environ["WANDB_SILENT"] = "true"
            os.environ["TGP_SET_WANDB_SILENT"] = "1"
    quiet_huggingface(verbose)


def configure_console(cfg) -> bool:
    """Apply the job's ``verbose`` setting (see :func:`quiet_lightning`); return it."""
    verbose = is_verbose(cfg)
    quiet_lightning(verbose)
    return verbose


class ConsoleSettings(Callback):
    """Carries the console settings into DDP-spawned ranks: unpickled there, it applies them
    before the rank logs anything (``Initializing distributed ...``, its warnings)."""

    def __init__(self, verbose: bool = False):
        self.verbose = bool(verbose)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        try:
            quiet_lightning(self.verbose)
        except Exception:  # noqa: BLE001 - console settings must never stop a rank
            print("tgp: could not apply the console settings in this process", file=sys.stderr)
