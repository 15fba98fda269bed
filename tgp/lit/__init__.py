"""The LightningModules: every stage trains one of these."""

from tgp.lit.classifier import ClassifierModule, build_optimizer, lr_lambda
from tgp.lit.gradual import SelfDistilledPruningModule
from tgp.lit.self_distill import SelfDistillModule

__all__ = ["ClassifierModule", "SelfDistillModule", "SelfDistilledPruningModule", "build_optimizer", "lr_lambda"]
