"""Training one stage of a job: the Trainer, ``fit`` and ``evaluate`` (:mod:`.trainer`), exact resume
(:mod:`.resume`), DDP helpers (:mod:`.distributed`), the cost of a fit (:mod:`.cost`), the config's
callbacks and loggers (:mod:`.callbacks`, :mod:`.loggers`) and loading weights (:mod:`.weights`).

The names below are re-exported: ``tgp.training.X`` (imports and the configs' ``_target_``) keeps working.
"""

from tgp.training.callbacks import StageLearningRateMonitor, config_callbacks
from tgp.training.cost import TrainingCost, device_name, stage_training_flops
from tgp.training.distributed import (AllReduceBatchNorm1d, AllReduceBatchNorm2d, AllReduceBatchNorm3d,
                                      AllReduceBatchNormSync, ProcessGroupAtExit, destroy_process_group)
from tgp.training.loggers import make_loggers
from tgp.training.resume import (AttemptLog, EpochEndCheckpoint, EpochSeed, PreemptionSignals, completed_epochs,
                                 merge_attempt_metrics)
from tgp.training.trainer import Training
from tgp.training.weights import load_net_weights, strip_prefix

__all__ = [
    "AllReduceBatchNorm1d", "AllReduceBatchNorm2d", "AllReduceBatchNorm3d", "AllReduceBatchNormSync", "AttemptLog",
    "EpochEndCheckpoint", "EpochSeed", "PreemptionSignals", "ProcessGroupAtExit", "StageLearningRateMonitor",
    "Training", "TrainingCost", "completed_epochs", "config_callbacks", "destroy_process_group", "device_name",
    "load_net_weights", "make_loggers", "merge_attempt_metrics", "stage_training_flops", "strip_prefix",
]
