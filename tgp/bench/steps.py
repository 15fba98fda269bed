"""Timings of one recipe on one device: the model alone, the real training steps, the data path, an epoch.

Every figure is a wall-clock time between two device synchronizations around many steps
(never one sync per step, which would itself slow a GPU down):

* ``model``: the student's forward + backward + SGD step on one resident batch, a plain loop —
  the ceiling of what a run can reach.
* ``dense`` / ``kd`` / ``masked`` / ``masked_kd`` / ``teacher``: the steps the stages run, through
  a Lightning Trainer and :class:`tgp.lit.ClassifierModule` (its loss, metrics and, for the masked
  steps, the :class:`tgp.pruning.MaskEnforcer`), on a resident batch, so the data path is out.
* ``eval``: the forward of validation/test (student and teacher).
* ``data``: the recipe's training data path alone (augmented batches delivered on the device).
* ``epoch``: a whole epoch through Lightning with that data path and a validation pass — the second
  epoch of a fit, after compilation and autotuning.
* ``prune``: the prune stage's teacher-guided scores over ``score_batches`` batches + the global threshold.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import lightning as L
import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from tgp.bench.recipes import Recipe
from tgp.blocks import kd_loss
from tgp.distill.losses import DistillationLoss
from tgp.lit import ClassifierModule
from tgp.lit.compiled import compile_module, uncompile_module
from tgp.pruning import MaskEnforcer, global_threshold, gradient_scores, magnitude_scores, prunable_parameters

STEP_KINDS = ("dense", "masked", "kd", "masked_kd", "teacher")  # each ratio's pair timed back to back


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    if device.type == "cuda" and precision.startswith("bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cuda" and precision.startswith("16"):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def timed(fn: Callable[[], None], device: torch.device, steps: int, warmup: int) -> float:
    """Seconds per call of ``fn``: ``warmup`` calls, then ``steps`` calls between two syncs."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / steps


def delivered_img_s(batches, device: torch.device) -> float:
    """Images per second over one pass of ``batches``, each moved to ``device`` (the copy counts)."""
    sync(device)
    t0, count = time.perf_counter(), 0
    for x, _ in batches:
        x = x.to(device, non_blocking=True)
        count += x.shape[0]
    sync(device)
    return count / (time.perf_counter() - t0)


class Resident:
    """The same batch ``n`` times: a loader with no data path at all."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n: int):
        self.x, self.y, self.n = x, y, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            yield self.x, self.y


class PhaseClock(L.Callback):
    """Synchronized timestamps of training batches and validation passes, per epoch."""

    def __init__(self, device: torch.device, warmup_batches: int = 0):
        self.device, self.warmup = device, warmup_batches
        self.train: dict[int, list[float]] = {}
        self.val: dict[int, list[float]] = {}
        self.batches: dict[int, int] = {}

    def _now(self) -> float:
        sync(self.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.train[trainer.current_epoch] = [self._now()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches[trainer.current_epoch] = batch_idx + 1

    def on_validation_epoch_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            now = self._now()
            self.train.setdefault(trainer.current_epoch, [now]).append(now)
            self.val[trainer.current_epoch] = [now]

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.val[trainer.current_epoch].append(self._now())

    def on_train_epoch_end(self, trainer, pl_module):
        epoch = trainer.current_epoch
        if len(self.train.get(epoch, [])) == 1:  # no validation this epoch
            self.train[epoch].append(self._now())


def make_trainer(device: torch.device, precision: str, callbacks: list, *, max_epochs: int = 1,
                 validate: bool = False) -> L.Trainer:
    return L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=[device.index or 0] if device.type == "cuda" else 1,
        precision=precision, max_epochs=max_epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=None if validate else 0, callbacks=callbacks, benchmark=device.type == "cuda",
    )


class Bench:
    """The networks, loss and mask of one recipe on one device; each method times one thing."""

    def __init__(self, recipe: Recipe, device: torch.device, *, compile_mode: str | None = None, seed: int = 0):
        self.recipe, self.device, self.compile_mode = recipe, device, compile_mode
        self.precision = recipe.precision(device)
        self.fmt = torch.channels_last if recipe.channels_last(device) else torch.contiguous_format
        torch.manual_seed(seed)
        self.student = self._prepare(recipe.student_net())
        self.teacher = self._prepare(recipe.teacher_net()).eval().requires_grad_(False)
        cfg = recipe.cfg
        self.kd = kd_loss(cfg.distill)
        if self.kd.needs_dataset_confidence:  # estimated once per run from the teacher; its value does not change the cost
            self.kd.set_dataset_confidence(0.9)
        self.ce = DistillationLoss(kd_weight=0.0)
        self.sparsity = float(cfg.pruning.sparsity)
        scores = magnitude_scores(self.student, prunable_parameters(self.student))
        self.mask = {k: m.to(device) for k, m in global_threshold(scores, self.sparsity).items()}
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn((recipe.batch, *recipe.input_shape), generator=gen)
        self.x = self.x.to(device).contiguous(memory_format=self.fmt)
        self.y = torch.randint(0, recipe.classes, (recipe.batch,), generator=gen).to(device)

    def _prepare(self, net: nn.Module) -> nn.Module:
        return net.to(self.device, memory_format=self.fmt)

    @contextlib.contextmanager
    def compiled(self, *nets: nn.Module):
        """``nets`` compiled as a run's fit compiles them (``compile=true``), for the plain loops;
        the Lightning steps compile through :class:`~tgp.lit.ClassifierModule` itself."""
        if self.compile_mode:
            for net in nets:
                compile_module(net, self.compile_mode)
        try:
            yield
        finally:
            for net in nets:
                uncompile_module(net)

    def autocast(self):
        return autocast(self.device, self.precision)

    # -- the ceiling ----------------------------------------------------------------------------
    def model_step_s(self, steps: int, warmup: int) -> float:
        net = self.student.train()
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-4, foreach=True)

        def step():
            if self.compile_mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()
            with self.autocast():
                loss = nn.functional.cross_entropy(net(self.x), self.y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        with self.compiled(net):
            return timed(step, self.device, steps, warmup)

    def eval_s(self, net: nn.Module, steps: int, warmup: int) -> float:
        net.eval()
        x = self.x[: self.recipe.eval_batch] if self.recipe.eval_batch <= self.recipe.batch else self.x

        @torch.no_grad()
        def step():
            with self.autocast():
                net(x)

        try:
            with self.compiled(net):
                return timed(step, self.device, steps, warmup) * self.recipe.eval_batch / x.shape[0]
        finally:
            net.train()

    # -- the stages' steps ----------------------------------------------------------------------
    def module(self, kind: str) -> ClassifierModule:
        cfg = self.recipe.cfg
        net = self.teacher_copy() if kind == "teacher" else self.student
        teacher = self.teacher if kind in ("kd", "masked_kd") else None
        criterion = self.kd if teacher is not None else self.ce
        mask = self.mask if kind.startswith("masked") else None
        return ClassifierModule(
            net, criterion, teacher=teacher, mask=mask, stage=f"bench_{kind}",
            optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True), lr=float(cfg.retrain.lr), epochs=1,
            schedule=OmegaConf.to_container(cfg.schedule), channels_last=self.fmt is torch.channels_last,
            num_classes=self.recipe.classes, compile_mode=self.compile_mode,
        )

    def teacher_copy(self) -> nn.Module:
        """The teacher as the teacher stage trains it (its own parameters; the frozen one stays frozen)."""
        if not hasattr(self, "_teacher_train"):
            self._teacher_train = self._prepare(self.recipe.teacher_net())
        return self._teacher_train

    def step_s(self, kind: str, steps: int, warmup: int) -> float:
        """Seconds per training step of stage ``kind`` through Lightning, on a resident batch."""
        clock = PhaseClock(self.device, warmup_batches=warmup)
        callbacks = [clock] + ([MaskEnforcer()] if kind.startswith("masked") else [])
        module = self.module(kind)
        make_trainer(self.device, self.precision, callbacks).fit(module, train_dataloaders=Resident(self.x, self.y, warmup + steps))
        t0, t1 = clock.train[0]
        if kind.startswith("masked"):  # the timing must be of an exact mask: check it held
            for name, p in module.net.named_parameters():
                if name in self.mask and bool(p.detach()[~self.mask[name]].any()):
                    raise AssertionError(f"bench: pruned weights of {name} are not zero after the masked steps")
        return (t1 - t0) / steps

    # -- data path and whole epochs -------------------------------------------------------------
    def loaders(self, n_train: int, n_val: int, seed: int = 0):
        """The recipe's data path over synthetic uint8 images of its shape (no files needed)."""
        r = self.recipe
        gen = torch.Generator().manual_seed(seed)
        images = torch.randint(0, 256, (n_train + n_val, r.image, r.image, r.channels), dtype=torch.uint8, generator=gen)
        labels = torch.randint(0, r.classes, (n_train + n_val,), generator=gen)
        data = r.cfg.data
        mean = (0.5,) * r.channels
        std = (0.25,) * r.channels
        if r.loader == "device":
            from tgp.data.device_loader import DeviceLoader

            cl = self.fmt is torch.channels_last
            train = DeviceLoader(images[:n_train], labels[:n_train], batch_size=r.batch, mean=mean, std=std,
                                 device=self.device, shuffle=True, drop_last=True, augment=bool(data.augment),
                                 channels_last=cl)
            val = DeviceLoader(images[n_train:], labels[n_train:], batch_size=r.eval_batch, mean=mean, std=std,
                               device=self.device, channels_last=cl)
            return train, val
        return (torch_loader(images[:n_train], labels[:n_train], r, train=True, mean=mean, std=std, device=self.device),
                torch_loader(images[n_train:], labels[n_train:], r, train=False, mean=mean, std=std, device=self.device))

    def data_img_s(self, n: int) -> float:
        train, _ = self.loaders(n, 1)
        delivered_img_s(train, self.device)  # warm-up: workers, allocator
        return delivered_img_s(train, self.device)

    def epoch(self, n_train: int, n_val: int) -> dict:
        """The second epoch of a dense CE fit through the recipe's data path, with validation."""
        clock = PhaseClock(self.device)
        train, val = self.loaders(n_train, n_val)
        trainer = make_trainer(self.device, self.precision, [clock], max_epochs=2, validate=True)
        trainer.fit(self.module("dense"), train_dataloaders=train, val_dataloaders=val)
        (t0, t1), (v0, v1) = clock.train[1], clock.val[1]
        images = clock.batches[1] * self.recipe.batch
        return {"train_images": images, "val_images": n_val, "train_s": t1 - t0, "val_s": v1 - v0,
                "seconds": v1 - t0, "img_s": images / (v1 - t0)}

    def prune_s(self, batches: int) -> float:
        """The prune stage's work: ``|θ ⊙ ∇L_total|`` over ``batches`` batches + the exact global threshold."""
        teacher, criterion = self.teacher, self.kd

        def loss_fn(model, xb, yb):
            with self.autocast():
                s, t = model(xb), teacher(xb)
            return criterion(s.float(), yb, t.float())[0]

        def run():
            scores = gradient_scores(self.student, prunable_parameters(self.student), [(self.x, self.y)] * batches, loss_fn)
            global_threshold(scores, self.sparsity)

        return timed(run, self.device, steps=1, warmup=0)


def torch_loader(images, labels, recipe: Recipe, *, train: bool, mean, std, device: torch.device):
    """torchvision's per-image path: PIL crop/flip/normalize in DataLoader workers, as the torch data path runs."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    from tgp.data.transforms import pil_eval_transform, pil_train_transform

    tf = (pil_train_transform(recipe.image, mean, std) if train and recipe.cfg.data.augment
          else pil_eval_transform(mean, std))
    array = images.numpy()

    class Images(Dataset):
        def __len__(self):
            return len(array)

        def __getitem__(self, i):
            return tf(Image.fromarray(array[i].squeeze(-1) if array.shape[-1] == 1 else array[i])), int(labels[i])

    workers = int(recipe.cfg.data.num_workers)
    return DataLoader(Images(), batch_size=recipe.batch if train else recipe.eval_batch, shuffle=train,
                      drop_last=train, num_workers=workers, pin_memory=device.type == "cuda",
                      persistent_workers=workers > 0)


def median_of(fn: Callable[[], float], repeats: int) -> float:
    return float(np.median([fn() for _ in range(repeats)]))
