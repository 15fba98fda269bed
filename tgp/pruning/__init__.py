"""Pruning: pure scores and thresholds, mask artifacts, and the Lightning callbacks that use them."""

from tgp.pruning.callbacks import OneShotPruning, mask_digest
from tgp.pruning.enforcer import MaskBuffers, MaskEnforcer
from tgp.pruning.mask import (
    Mask,
    apply_mask,
    check_mask_fits,
    load_mask,
    prunable_parameters,
    save_mask,
    sparsity_report,
)
from tgp.pruning.scores import SCORES, gradient_scores, magnitude_scores, random_scores
from tgp.pruning.threshold import check_sparsity, global_threshold

__all__ = [
    "SCORES", "Mask", "MaskBuffers", "MaskEnforcer", "OneShotPruning", "apply_mask", "check_mask_fits",
    "check_sparsity", "global_threshold", "gradient_scores", "load_mask", "magnitude_scores", "mask_digest",
    "prunable_parameters", "random_scores", "save_mask", "sparsity_report",
]
