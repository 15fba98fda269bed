"""The Lightning callbacks of pruning: one-shot (score → global threshold → mask, identical on every
rank), gradual magnitude pruning on a schedule, best-at-final-mask tracking, saving a rewind point.

A callback never looks for another in ``trainer.callbacks``: a mask change goes through the
module (``pl_module.update_mask``), which the :class:`~tgp.pruning.MaskEnforcer` follows."""

from __future__ import annotations

import functools
import hashlib
import itertools
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor

from tgp.io import atomic_torch_save
from tgp.pruning.mask import (
    Mask, classifier_name, prunable_parameters, sparsity_report, write_mask,
    warn_layer_collapse,
)
from tgp.pruning.nested import magnitude_mask, mask_counts
from tgp.pruning.schedules import cubic_sparsity
from tgp.pruning.scores import SCORES, Score
from tgp.pruning.threshold import global_threshold


def all_reduce_sum(tensors: list[Tensor]) -> None:
    """Sum tensors across ranks in place with one collective (flattened), a no-op without DDP."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
        t.copy_(part.view_as(t))


def mask_digest(mask: Mask) -> str:
    """SHA-256 of the packed mask bits in name order: equal digests = identical masks."""
    h = hashlib.sha256()
    for name in sorted(mask):
        h.update(name.encode())
        h.update(mask[name].detach().cpu().reshape(-1).numpy().tobytes())
    return h.hexdigest()


class OneShotPruning(L.Callback):
    """Prune the module's network once, globally, to ``sparsity``.

    Scores (see :mod:`tgp.pruning.scores`): ``gradient`` — ``|θ ⊙ ∇θ L|`` over ``score_batches``
    batches of the datamodule's ``score_dataloader()``, with ``L = loss_fn(model, x, y)`` when
    given (e.g. a self-distillation loss), else the module's own objective (``α·CA-KLD +
    (1−α)·CE`` under a teacher: the teacher-guided score; CE alone otherwise);
    ``magnitude`` — ``|θ|``; ``random``.

    Fires once: at ``on_validation_start`` of ``trainer.validate`` (pruning a trained
    checkpoint on its own, which then measures the pruned network), or at ``on_train_end`` when
    attached to a ``fit``. Under DDP each rank scores a disjoint share of the batches, the
    partial sums are all-reduced before the threshold, and the mask digests of all ranks are
    compared; rank 0 writes ``mask.pt`` and ``sparsity_report.json`` to ``out_dir``.

    ``keep_class_rows`` (``pruning.keep_class_rows``): every class keeps at least its top-scoring
    classifier weight, still exactly ``round(s·N)`` removed (see :func:`global_threshold`'s
    ``keep_rows``). ``invert``: keep the *lowest* scores instead (the threshold of the negated
    scores; the inverted-score sanity check). Layers or classes left without any weight are
    listed in the report and warned about (:func:`~tgp.pruning.mask.warn_layer_collapse`).
    """

    def __init__(
        self,
        sparsity: float,
        out_dir: str | Path | None = None,
        score: str = "gradient",
        score_batches: int = 10,
        accumulate: str = "grad_then_abs",
        exclude: list[str] | tuple[str, ...] = (),
        min_layer_density: float = 0.0,
        seed: int = 0,
        loss_fn=None,
        keep_class_rows: bool = False,
        invert: bool = False,
    ):
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}; known: {sorted(SCORES)}")
        self.sparsity, self.out_dir, self.score = sparsity, out_dir, score
        self.score_batches, self.accumulate = score_batches, accumulate
        self.exclude, self.min_layer_density, self.seed = list(exclude), min_layer_density, seed
        self.loss_fn = loss_fn  # (model, x, y) -> loss; None: the module's own objective
        self.keep_class_rows, self.invert = bool(keep_class_rows), bool(invert)
        self.score_fn: Score = SCORES[score]
        if score == "gradient":  # its options; every score is then called alike (tgp.pruning.scores)
            self.score_fn = functools.partial(self.score_fn, accumulate=accumulate, all_reduce=all_reduce_sum)
        self.mask: Mask | None = None
        self.report: dict | None = None

    def _score_batches(self, trainer):
        """This rank's share of the first ``score_batches`` batches; nothing is loaded until it is iterated.
        Batch i goes to rank i % world: together the ranks see exactly the batches a single process would."""
        rank, world = trainer.global_rank, trainer.world_size
        loader = itertools.islice(trainer.datamodule.score_dataloader(), self.score_batches)
        for i, batch in enumerate(loader):
            if i % world == rank:
                yield batch

    def compute_mask(self, trainer, pl_module) -> Mask:
        net = pl_module.net
        params = prunable_parameters(net, self.exclude)
        # The batches are a generator: a score that does not use them (magnitude, random) draws none, and
        # needs no trainer or module objective either.
        loss_fn = self.loss_fn or getattr(pl_module, "objective", None)
        scores = self.score_fn(net, params, self._score_batches(trainer), loss_fn, seed=self.seed)
        if self.invert:  # keep the lowest scores: among equal scores the tie rule still removes the first
            scores = {n: -s for n, s in scores.items()}
        classifier = classifier_name(net)
        keep_rows = [classifier] if self.keep_class_rows and classifier in params else None
        return global_threshold(scores, self.sparsity, min_layer_density=self.min_layer_density, keep_rows=keep_rows)

    def _prune(self, trainer, pl_module) -> None:
        if self.mask is not None:
            return
        with torch.inference_mode(False):
            mask = self.compute_mask(trainer, pl_module)
            pl_module.set_mask(mask)
        digest = mask_digest(mask)
        digests = [digest]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            digests = [None] * dist.get_world_size()
            dist.all_gather_object(digests, digest)
            if len(set(digests)) != 1:
                raise RuntimeError(f"pruning produced different masks on different ranks: {digests}")
        report = sparsity_report(mask, pl_module.net, target=self.sparsity)
        report.update(score=self.score, score_batches=self.score_batches, accumulate=self.accumulate,
                      exclude=self.exclude, world_size=len(digests), mask_digests=digests,
                      keep_class_rows=self.keep_class_rows, invert=self.invert)
        if trainer.is_global_zero:
            warn_layer_collapse(report, "one-shot pruning" + (f" ({self.out_dir})" if self.out_dir else ""))
        self.mask, self.report = mask, report
        if self.out_dir is not None and trainer.is_global_zero:
            write_mask(mask, Path(self.out_dir), report)

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "validate":
            self._prune(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._prune(trainer, pl_module)


class GradualMagnitudePruning(L.Callback):
    """Recompute the module's mask at the start of every epoch on the cubic schedule; keep pruned weights at 0.

    The module must carry a mask (all-True at the start); it is updated in place, so it is in
    every checkpoint and a resumed fit continues from it.
    """

    def __init__(self, final_sparsity: float, prune_epochs: int, exclude=(), min_layer_density: float = 0.0):
        self.final, self.ramp = float(final_sparsity), int(prune_epochs)
        self.exclude, self.min_layer_density = list(exclude), float(min_layer_density)
        self.history: list[tuple[int, float]] = []

    def sparsity_at(self, epoch: int) -> float:
        return cubic_sparsity(epoch + 1, self.ramp, self.final)

    @torch.no_grad()
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        target = self.sparsity_at(epoch)
        current = pl_module.mask
        weights = prunable_parameters(pl_module.net, self.exclude)
        new = magnitude_mask(weights, target, current, self.min_layer_density)
        pl_module.update_mask(new)  # zeroes the newly pruned weights; the MaskEnforcer follows it
        total, kept = mask_counts(new)
        self.history.append((epoch, 1 - kept / total))
        pl_module.log(f"{pl_module.stage}/sparsity", 1 - kept / total, on_step=False, on_epoch=True)


class BestAtFinalSparsity(L.Callback):
    """Keep the weights of the best-validation epoch among those trained at the final mask.

    The fit's own best checkpoint may come from an epoch of the pruning ramp (a denser network),
    so the reported best-val accuracy is taken from this one instead. Its state is in every
    checkpoint, so a resumed fit keeps the best so far.
    """

    def __init__(self, stage: str, first_epoch: int, path: Path, monitor: str = "val/acc"):
        self.stage, self.first_epoch, self.path = stage, int(first_epoch), Path(path)
        self.monitor = monitor  # the validation metric, without the stage prefix (higher is better)
        self.best: float | None = None
        self.best_epoch: int | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.current_epoch < self.first_epoch:
            return
        acc = trainer.callback_metrics.get(f"{self.stage}/{self.monitor}")
        if acc is None or (self.best is not None and float(acc) <= self.best):
            return
        self.best, self.best_epoch = float(acc), int(trainer.current_epoch)
        if trainer.is_global_zero:
            atomic_torch_save({k: v.detach().cpu() for k, v in pl_module.net.state_dict().items()}, self.path)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")


class SaveAtEpoch(L.Callback):
    """Save the network's weights after ``epoch`` training epochs (IMP's rewind point)."""

    def __init__(self, epoch: int, path: Path):
        self.epoch, self.path = epoch, Path(path)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 == self.epoch and trainer.is_global_zero:
            atomic_torch_save({k: v.detach().cpu() for k, v in pl_module.net.state_dict().items()}, self.path)
