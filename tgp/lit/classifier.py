"""The LightningModule every stage trains: a student network, an optional frozen teacher, an
objective, and an optional fixed mask.

Teacher training (CE), KD pretraining (α·CA-KLD + (1−α)·CE under the teacher) and sparse
retraining (mask + KD or CE) are the same concept with different parts, so they are one class.
"""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from tgp.distill.losses import DistillationLoss, task_loss
from tgp.lit.compiled import compile_module, eager_call, uncompile_module
from tgp.measure.flops import TrainingFlops
from tgp.metrics.scoring import Scoring, accuracy_scoring
from tgp.pruning.enforcer import MaskBuffers
from tgp.pruning.mask import Mask, apply_mask, check_mask_fits


def build_optimizer(params, name: str, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4,
                    nesterov: bool = True, betas=(0.9, 0.999)) -> torch.optim.Optimizer:
    # Weight decay on BatchNorm parameters and biases hurts small CIFAR nets; decay only weights
    # of rank > 1 (conv and linear kernels).
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # foreach=True: one fused update over all tensors instead of a loop per parameter.
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0, foreach=True)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), foreach=True)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=tuple(betas), foreach=True)
    from tgp.errors import ConfigError

    raise ConfigError("optimizer.name", name, "unknown optimizer.", "use sgd, adamw or adam.")


SCHEDULE_KINDS = ("cosine", "multistep", "linear", "constant")  # schedule.kind (checked before any stage)


def lr_lambda(step: int, *, total: int, warmup: int, kind: str, milestones=(0.5, 0.75), gamma: float = 0.1) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (per-step, so short stages still anneal)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(total - warmup, 1)
    if kind == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    if kind == "multistep":
        return gamma ** sum(t >= m for m in milestones)
    if kind == "linear":  # linear decay to 0 after the warm-up (BERT's fine-tuning schedule)
        return max(0.0, 1.0 - t)
    if kind == "constant":
        return 1.0
    raise ValueError(f"schedule.kind={kind!r}: not one of {', '.join(SCHEDULE_KINDS)}")  # checked earlier


class ClassifierModule(L.LightningModule):
    """Train ``net`` on ``criterion(net(x), y, teacher(x))``; evaluate with the data's metrics (torchmetrics).

    * ``teacher``: frozen (no gradients, eval mode even while the student trains, outside the
      optimizer and weight decay). ``None`` for CE training.
    * ``mask``: ``{param_name: bool}`` held as buffers (so it is in every checkpoint); the
      :class:`~tgp.pruning.MaskEnforcer` callback keeps pruned weights at zero.
    * Metrics are those of ``scoring`` (the datamodule's :class:`~tgp.metrics.scoring.Scoring`; default:
      top-1 over ``num_classes``), computed once per epoch and logged under ``<stage>/{train,val}/<metric>``
      with the single score as ``<stage>/<split>/<scoring.logged>`` (images: ``val/acc``; text: ``val/score``);
      the validation loss is the data's task loss (CE, or MSE for a regression target).
    * ``compile_mode``: a ``torch.compile`` mode (``compile=true``) or ``None``: the student's and
      the per-step teacher's forward are compiled while the module fits (:mod:`tgp.lit.compiled`).

    **No host syncs per batch.** The steps never read a device value back (no ``.item()``,
    ``float(t)``, ``if t:``): losses are logged as tensors with ``on_step=False`` (Lightning
    accumulates them on the device and reduces at the epoch's end), the metrics are torchmetrics
    objects fed with ``update`` (computed once at the epoch's end) and ``validate_args=False`` (its
    checks of label ranges read values back). ``tests/test_compile.py`` counts the reads.
    """

    def __init__(
        self,
        net: nn.Module,
        criterion: DistillationLoss,
        *,
        teacher: nn.Module | None = None,
        mask: Mask | None = None,
        stage: str = "train",
        optimizer: dict | None = None,
        lr: float = 0.1,
        epochs: int = 1,
        schedule: dict | None = None,
        channels_last: bool = False,
        num_classes: int | None = None,
        compile_mode: str | None = None,
        scoring: Scoring | None = None,
    ):
        super().__init__()
        self.net = net
        self.criterion = criterion
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()
        self.stage = stage
        self.optimizer_cfg = dict(optimizer or {"name": "sgd"})
        self.lr, self.epochs = lr, epochs
        self.schedule = dict(schedule or {"kind": "cosine", "warmup_epochs": 0})
        self.channels_last = channels_last
        if channels_last:  # before Lightning moves and DDP wraps the module: the layout is then fixed
            net.to(memory_format=torch.channels_last)
            if teacher is not None:
                teacher.to(memory_format=torch.channels_last)
        self.compile_mode = compile_mode
        self.scoring = scoring or accuracy_scoring(num_classes or net.fc.out_features)
        # Fresh collections (validate_args=False: the input checks read back to the host; see above).
        self.train_metrics: MetricCollection = self.scoring.metrics()
        self.val_metrics: MetricCollection = self.scoring.metrics()
        self.test_metrics: MetricCollection = self.scoring.metrics()
        self.teacher_metrics: MetricCollection = self.scoring.metrics()
        self._teacher_logged = False
        self.mask_buffers: MaskBuffers | None = None
        self.mask_version = 0  # bumped on every mask change; the MaskEnforcer re-binds when it moves
        if mask is not None:
            self.set_mask(mask)

    # -- mask -------------------------------------------------------------------------------
    @property
    def mask(self) -> Mask | None:
        return None if self.mask_buffers is None else self.mask_buffers.as_dict()

    def set_mask(self, mask: Mask) -> None:
        """Attach a mask (as buffers) and zero the pruned weights now."""
        check_mask_fits(mask, self.net)
        device = next(self.net.parameters()).device
        self.mask_buffers = MaskBuffers(mask).to(device)
        apply_mask(self.net, self.mask)
        self.mask_version += 1

    @torch.no_grad()
    def update_mask(self, mask: Mask) -> None:
        """Replace the mask in place (same buffers, so checkpoints keep it) and zero newly pruned weights."""
        if self.mask_buffers is None:
            self.set_mask(mask)
            return
        for name, buf in self.mask.items():
            buf.copy_(mask[name].to(buf.device))
        apply_mask(self.net, self.mask)
        self.mask_version += 1

    def objective(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The training objective as a ``loss_fn(model, x, y)`` (scores differentiate it):
        ``criterion(model(x), y, teacher(x))`` — ``α·CA-KLD + (1−α)·CE`` under a teacher, CE without."""
        teacher_logits = self.teacher(x) if self.teacher is not None and self.criterion.kd_weight > 0 else None
        return self.criterion(model(x), y, teacher_logits)[0]

    # -- modes ------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # BatchNorm statistics of the teacher never change
        return self

    # -- what the training step runs (compile=true: tgp.lit.compiled; cost: tgp.training.cost) ------------
    def teacher_in_step(self) -> bool:
        """Whether the training step runs the teacher (then it is compiled with the student)."""
        return self.teacher is not None and self.criterion.kd_weight > 0

    def training_flops(self, example_input) -> TrainingFlops | None:
        """What one training example costs (:class:`~tgp.measure.flops.TrainingFlops`, measured on the
        first example of ``example_input``, a batch or a callable returning one): the student's forward
        + backward, plus the frozen teacher's forward when the loss uses it (:meth:`teacher_in_step`).
        A subclass whose step runs something else says so here; ``None``: not measured."""
        return TrainingFlops(self.net, example_input, self.teacher if self.teacher_in_step() else None)

    def setup(self, stage: str) -> None:
        # Only fits are compiled: trainer.validate (the prune stage: a handful of scoring batches
        # and one validation pass) and the test evaluation stay eager, compiling them costs more
        # than it saves.
        if stage == "fit" and self.compile_mode:
            self.compile_nets(self.compile_mode)

    def teardown(self, stage: str) -> None:
        if stage == "fit" and self.compile_mode:
            self.uncompile_nets()

    def compile_nets(self, mode: str) -> None:
        arch = getattr(self.net, "arch", type(self.net).__name__)
        compile_module(self.net, mode, f"the student {arch}")
        if self.teacher_in_step():
            compile_module(self.teacher, mode, f"the teacher {getattr(self.teacher, 'arch', type(self.teacher).__name__)}")

    def uncompile_nets(self) -> None:
        uncompile_module(self.net)
        uncompile_module(self.teacher)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        if self.compile_mode == "reduce-overhead":  # CUDA graphs: a new iteration may overwrite last step's outputs
            torch.compiler.cudagraph_mark_step_begin()

    def on_fit_start(self) -> None:
        if getattr(self.criterion, "needs_dataset_confidence", False) and torch.isnan(self.criterion.dataset_confidence):
            raise RuntimeError("distill.confidence=dataset but the dataset confidence was never estimated")

    # -- steps ------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _inputs(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def training_step(self, batch, batch_idx):
        x, y = batch
        x = self._inputs(x)
        logits = self.net(x)
        teacher_logits = None
        if self.teacher_in_step():
            with torch.no_grad():
                teacher_logits = self.teacher(x)
        loss, parts = self.criterion(logits, y, teacher_logits)
        self.train_metrics.update(logits.detach(), y)
        self.log(f"{self.stage}/train/loss", loss.detach(), on_step=False, on_epoch=True, sync_dist=True)
        for k, v in parts.items():
            self.log(f"{self.stage}/train/{k}", v, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    # -- metrics: updated per batch on the device, computed (and synced over DDP ranks) once per epoch ----
    def epoch_metrics(self, metrics: MetricCollection, split: str, prefix: str = "", only_score: bool = False) -> dict:
        """``metrics`` computed (torchmetrics syncs them over the DDP ranks) and reset, logged as
        ``<stage>/<split>/<prefix><metric>`` and the single score as ``<prefix><scoring.logged>``."""
        values = metrics.compute()
        metrics.reset()
        logged = {} if only_score else {f"{prefix}{k}": v for k, v in values.items()}
        if only_score or self.scoring.logged not in values:
            logged[f"{prefix}{self.scoring.logged}"] = torch.stack(
                [values[k].float() for k in self.scoring.metric_names]).mean()
        for k, v in logged.items():  # already synced: sync_dist would reduce them again
            self.log(f"{self.stage}/{split}/{k}", v, on_step=False, on_epoch=True,
                     prog_bar=split == "val" and k == self.scoring.logged)
        return logged

    def on_train_epoch_end(self) -> None:
        self.epoch_metrics(self.train_metrics, "train")

    def _eval_step(self, batch, metrics: MetricCollection, split: str):
        x, y = batch
        logits = self.net(self._inputs(x))
        loss = task_loss(logits, y, self.scoring.regression)
        metrics.update(logits.float(), y)
        self.log(f"{self.stage}/{split}/loss", loss, on_step=False, on_epoch=True, sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, self.val_metrics, "val")
        if self.teacher is not None and not self._teacher_logged and not self.trainer.sanity_checking:
            x, y = batch
            # Once per fit (the teacher never changes): eager, one more compiled graph would not pay.
            self.teacher_metrics.update(eager_call(self.teacher, self._inputs(x)).float(), y)

    def on_validation_epoch_end(self) -> None:
        self.epoch_metrics(self.val_metrics, "val")
        if self.teacher is not None and not self._teacher_logged and not self.trainer.sanity_checking:
            self.epoch_metrics(self.teacher_metrics, "val", prefix="teacher_", only_score=True)
            self._teacher_logged = True

    # The teacher's accuracy is logged once per stage, also across a resume.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["teacher_acc_logged"] = self._teacher_logged

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._teacher_logged = bool(checkpoint.get("teacher_acc_logged", False))

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        self.epoch_metrics(self.test_metrics, "test")

    # -- optimization ---------------------------------------------------------------------------
    def configure_optimizers(self):
        cfg = dict(self.optimizer_cfg)
        opt = build_optimizer(self.net.parameters(), cfg.pop("name", "sgd"), self.lr, **cfg)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        steps_per_epoch = total / max(self.epochs, 1)
        sched = dict(self.schedule)
        warmup = int(sched.pop("warmup_epochs", 0) * steps_per_epoch)
        fn = partial(lr_lambda, total=total, warmup=warmup, **sched)
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, fn)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
