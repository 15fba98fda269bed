"""One job's handles, passed to a method's ``run``: its config, data, stage runner and training."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from tgp.pruning.mask import MASK_FILE, SPARSITY_REPORT_FILE
from tgp.stages import StageKind, StageRunner
from tgp.training import Training

NET_FILE = "net.pt"  # a stage's trained (or saved) network: a plain state_dict


class Job:
    """``job.cfg`` is the full config between stages and the running stage's view inside one."""

    def __init__(self, cfg: DictConfig, run_dir: str | Path, dm):
        self._cfg, self.run_dir, self.dm = cfg, Path(run_dir), dm
        self.stages = StageRunner(cfg, self.run_dir)
        self.training = Training(cfg, dm, clock=lambda: self.stages.attempt)

    @property
    def cfg(self) -> DictConfig:
        return self.stages.view if self.stages.view is not None else self._cfg

    @property
    def results(self) -> dict[str, dict]:
        return self.stages.results

    def run(self, kind: StageKind, fn, parent: str | None = None, name: str | None = None) -> dict:
        return self.stages.run(kind, fn, parent=parent, name=name)

    def stage_path(self, stage: str, *parts: str) -> Path:
        return self.run_dir.joinpath(stage, *parts)

    def net_path(self, stage: str) -> Path:
        """Stage ``stage``'s network (``net.pt``)."""
        return self.stage_path(stage, NET_FILE)

    def mask_path(self, stage: str) -> Path:
        """The mask stage ``stage`` made (``mask.pt``, :func:`tgp.pruning.mask.save_mask`)."""
        return self.stage_path(stage, MASK_FILE)

    def sparsity_report_path(self, stage: str) -> Path:
        """The sparsity report of the mask stage ``stage`` made (``sparsity_report.json``)."""
        return self.stage_path(stage, SPARSITY_REPORT_FILE)
