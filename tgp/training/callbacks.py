"""The config's ``callbacks`` group for one stage's Trainer, and the stage-prefixed learning-rate monitor."""

from __future__ import annotations

from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from omegaconf import DictConfig, OmegaConf


DEFAULT_MONITOR = "val/acc"


def monitored(configured: str, score: str) -> str:
    """The logged validation metric a configured ``monitor`` names: the default ``val/acc`` stands for the
    data's single score, logged as ``val/<score>`` (``score`` = ``dm.scoring.logged``: images ``acc``, the
    top-1 itself; text ``score``, the task's official score); any other name is taken as it is."""
    return f"val/{score}" if configured == DEFAULT_MONITOR else configured


def config_callbacks(cfg: DictConfig, stage: str, *, early_stopping: bool = False,
                     has_logger: bool = True, score: str = "acc") -> list[Callback]:
    """The ``callbacks`` group's callbacks for one stage's Trainer: every entry with a ``_target_`` and
    ``enabled: true`` (``model_checkpoint`` is read by :meth:`Training.fit` instead). A ``monitor`` is
    prefixed with the stage (``val/acc`` -> ``<stage>/val/acc``; the default ``val/acc`` names the data's
    single score, :func:`monitored`); early stopping only where ``early_stopping`` (the fitted stages) and
    the rich progress bar only while the Trainer has a bar."""
    out = []
    for name, node in (OmegaConf.select(cfg, "callbacks") or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        settings = OmegaConf.to_container(node, resolve=True)
        if not settings.pop("enabled", True):
            continue
        target = str(settings["_target_"])
        if target.endswith("EarlyStopping") and not early_stopping:
            continue
        if target.endswith("ProgressBar") and not OmegaConf.select(cfg, "trainer.enable_progress_bar", default=True):
            continue  # Lightning refuses a progress-bar callback on a Trainer without a bar
        if target.endswith("LearningRateMonitor") and not has_logger:
            continue  # Lightning refuses an LR monitor on a Trainer without a logger (logger=none)
        if "monitor" in settings:
            settings["monitor"] = f"{stage}/{monitored(str(settings['monitor']), score)}"
        if target.endswith("StageLearningRateMonitor"):
            settings["stage"] = stage
        out.append(instantiate(settings))
    return out


class StageLearningRateMonitor(LearningRateMonitor):
    """Lightning's LearningRateMonitor with the stage's prefix (``<stage>/train/lr-SGD``: the stages of
    a job share its W&B run, and every other metric is stage-prefixed too) and the ``epoch`` in each
    row, so :func:`merge_attempt_metrics` keeps a resumed stage's rows exactly once."""

    def __init__(self, stage: str = "", **kw):
        super().__init__(**kw)
        self.stage = stage

    def _extract_stats(self, trainer, interval: str) -> dict[str, float]:
        stats = super()._extract_stats(trainer, interval)
        if self.stage:
            stats = {f"{self.stage}/train/{k}": v for k, v in stats.items()}
        return {**stats, "epoch": trainer.current_epoch} if stats else stats
