"""Benchmarks of a text recipe: tokens per second of the steps its stages train with, and its data path's padding.

A recipe is text when its datamodule is (``modality == "text"``, e.g. ``experiment=demo_text``: the tiny
BERT on the generated roleswap task, offline on a CPU; a GLUE recipe with ``model=bert_base`` on a GPU, whose
data and checkpoint must be on that machine). Unlike images, a text batch's cost depends on its length, so
every figure is taken on the recipe's own training batches — token ids padded per batch to their longest
row, as the runs see them — held resident on the device and cycled:

=================  =======================================================================
model              the student's forward + backward + optimizer step (AdamW as configured), a plain loop
dense / kd         the dense step (task loss) / the KD step (frozen teacher forward + α·KD + (1−α)·CE)
masked / masked_kd the sparse retraining step (MaskEnforcer; the recipe's sparsity) without / with KD
teacher            the teacher stage's step (the teacher network trained with the task loss)
eval               the student's forward on evaluation batches
data               the recipe's training data path alone, one epoch, batches delivered on the device
=================  =======================================================================

Each is reported in real (non-padding) tokens per second (``<kind>_tok_s``), in processed tokens per
second including padding (``<kind>_padded_tok_s``) and in examples per second; ``padded_over_real`` is
the data path's processed/real token ratio (per-batch padding) and ``padded_to_max_over_real`` what
padding every row to ``data.max_length`` would cost instead. ``stage_epoch_s`` estimates each stage's
epoch at the recipe's training-set size from these steps, as the image recipes' does.
"""

from __future__ import annotations

import itertools
import statistics

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from tgp.bench.steps import PhaseClock, make_trainer, sync, timed
from tgp.blocks import kd_loss, task_loss
from tgp.lit import ClassifierModule, build_optimizer
from tgp.lit.compiled import compile_module, uncompile_module
from tgp.pruning import MaskEnforcer, global_threshold, magnitude_scores, prunable_parameters

TEXT_STEPS = ("dense", "masked", "kd", "masked_kd", "teacher")


def is_text(cfg: DictConfig) -> bool:
    """Whether the recipe's datamodule is a text one (its class says so: ``modality``)."""
    return getattr(get_class(str(cfg.data._target_)), "modality", None) == "text"


class Cycle:
    """A loader over resident batches, cycled ``n`` times through (no data path at all)."""

    def __init__(self, batches: list, n: int):
        self.batches, self.n = batches, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return itertools.islice(itertools.cycle(self.batches), self.n)


class TextBench:
    """The recipe's data (set up), networks, losses and mask on one device; each method times one thing."""

    def __init__(self, cfg: DictConfig, device: torch.device, *, compile_mode: str | None = None,
                 batch: int | None = None, n_batches: int = 8, seed: int = 0):
        self.cfg, self.device, self.compile_mode = cfg, device, compile_mode
        self.precision = str(cfg.trainer.precision) if device.type == "cuda" else "32-true"
        self.dm = instantiate(cfg.data, **({"batch_size": batch} if batch else {}))
        self.dm.setup("fit")
        kwargs = self.dm.model_kwargs()
        torch.manual_seed(seed)
        self.student = instantiate(cfg.model, **kwargs).to(device)
        self.teacher = instantiate(cfg.teacher.net, **kwargs).to(device).eval().requires_grad_(False)
        self._teacher_train = None
        self.kd = kd_loss(cfg.distill, regression=self.dm.regression)
        if self.kd.needs_dataset_confidence:  # estimated once per run from the teacher; its value does not change the cost
            self.kd.set_dataset_confidence(0.9)
        self.task = task_loss(self.dm)
        scores = magnitude_scores(self.student, prunable_parameters(self.student, list(cfg.pruning.exclude)))
        self.mask = {k: m.to(device) for k, m in global_threshold(scores, float(cfg.pruning.sparsity)).items()}
        # The recipe's own first training batches (its order, its lengths), resident on the device.
        self.batches = [(x.to(device), y.to(device)) for x, y in itertools.islice(self.dm.train_dataloader(), n_batches)]
        self.pad_id = int(self.dm.pad_id)

    def tokens(self, n: int) -> tuple[int, int, int]:
        """``(real tokens, processed tokens, examples)`` of the first ``n`` batches of the cycle."""
        chosen = list(itertools.islice(itertools.cycle(self.batches), n))
        real = sum(int((x != self.pad_id).sum()) for x, _ in chosen)
        return real, sum(x.numel() for x, _ in chosen), sum(len(x) for x, _ in chosen)

    def module(self, kind: str) -> ClassifierModule:
        cfg = self.cfg
        net = self.teacher_copy() if kind == "teacher" else self.student
        teacher = self.teacher if kind in ("kd", "masked_kd") else None
        return ClassifierModule(
            net, self.kd if teacher is not None else self.task, teacher=teacher,
            mask=self.mask if kind.startswith("masked") else None, stage=f"bench_{kind}",
            optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True), lr=float(cfg.retrain.lr), epochs=1,
            schedule=OmegaConf.to_container(cfg.schedule), scoring=self.dm.scoring, compile_mode=self.compile_mode)

    def teacher_copy(self):
        """The teacher as the teacher stage trains it (its own parameters; the frozen one stays frozen)."""
        if self._teacher_train is None:
            self._teacher_train = instantiate(self.cfg.teacher.net, **self.dm.model_kwargs()).to(self.device)
        return self._teacher_train

    def step_s(self, kind: str, steps: int, warmup: int) -> float:
        """Seconds per training step of ``kind`` through Lightning (the stage's module and callbacks)."""
        clock = PhaseClock(self.device, warmup_batches=warmup)
        callbacks = [clock] + ([MaskEnforcer()] if kind.startswith("masked") else [])
        module = self.module(kind)
        make_trainer(self.device, self.precision, callbacks).fit(module, train_dataloaders=Cycle(self.batches, warmup + steps))
        t0, t1 = clock.train[0]
        if kind.startswith("masked"):  # the timing must be of an exact mask: check it held
            params = dict(module.net.named_parameters())
            leaked = [n for n, m in self.mask.items() if bool(params[n].detach()[~m].any())]
            if leaked:
                raise AssertionError(f"bench: pruned weights are not zero after the masked steps: {leaked[:3]}")
        return (t1 - t0) / steps

    def model_step_s(self, steps: int, warmup: int) -> float:
        net = self.student.train()
        opt_cfg = OmegaConf.to_container(self.cfg.optimizer, resolve=True)
        opt = build_optimizer(net.parameters(), opt_cfg.pop("name"), float(self.cfg.retrain.lr), **opt_cfg)
        loader = itertools.cycle(self.batches)

        def step():
            x, y = next(loader)
            loss = self.task(net(x), y)[0]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        if self.compile_mode:
            compile_module(net, self.compile_mode, "the student")
        try:
            return timed(step, self.device, steps, warmup)
        finally:
            uncompile_module(net)

    @torch.no_grad()
    def eval_s(self, steps: int, warmup: int) -> float:
        net = self.student.eval()
        loader = itertools.cycle(self.batches)
        try:
            return timed(lambda: net(next(loader)[0]), self.device, steps, warmup)
        finally:
            net.train()

    def data_path(self) -> dict:
        """One epoch of the training data path delivered on the device: real tokens per second, and what
        padding costs (per batch, and to ``max_length``)."""
        sync(self.device)
        import time

        t0, real, padded, rows = time.perf_counter(), 0, 0, 0
        for x, _ in self.dm.train_dataloader():
            x = x.to(self.device, non_blocking=True)
            real += int((x != self.pad_id).sum())
            padded, rows = padded + x.numel(), rows + len(x)
        sync(self.device)
        seconds = time.perf_counter() - t0
        return {"data_tok_s": real / seconds, "padded_over_real": padded / real,
                "padded_to_max_over_real": rows * int(self.dm.max_length) / real, "real_tokens_per_row": real / rows}


def measure_text(cfg: DictConfig, device: torch.device, *, compile_mode: str | None, steps: int, warmup: int,
                 repeats: int, batch: int | None = None, log=print, name: str = "") -> tuple[dict, dict]:
    """``(header, figures)`` of a text recipe on ``device`` in one mode (eager or compiled)."""
    bench = TextBench(cfg, device, compile_mode=compile_mode, batch=batch)
    dm = bench.dm
    log(f"  {name} [{'compiled ' + compile_mode if compile_mode else 'eager'}]: model and steps", end="", flush=True)
    times: dict[str, list[float]] = {k: [] for k in ("model", *TEXT_STEPS)}
    for _ in range(repeats):  # repeats outermost: drift hits every kind alike
        times["model"].append(bench.model_step_s(steps, warmup))
        for kind in TEXT_STEPS:
            times[kind].append(bench.step_s(kind, steps, warmup))
    real, padded, examples = bench.tokens(steps)  # what one timed stretch of `steps` batches processes
    fig: dict = {}
    for kind, ts in times.items():
        step = statistics.median(ts)
        fig[f"{kind}_step_s"] = step
        fig[f"{kind}_tok_s"] = real / (steps * step)
        fig[f"{kind}_padded_tok_s"] = padded / (steps * step)
        fig[f"{kind}_ex_s"] = examples / (steps * step)
    fig["masked_over_dense"] = statistics.median(m / d for m, d in zip(times["masked"], times["dense"]))
    fig["masked_kd_over_kd"] = statistics.median(m / d for m, d in zip(times["masked_kd"], times["kd"]))
    log(", eval, data", flush=True)
    eval_step = statistics.median(bench.eval_s(steps, warmup) for _ in range(repeats))
    fig["eval_tok_s"] = real / (steps * eval_step)
    fig.update(bench.data_path())
    n_train, n_val = len(dm.data_train), len(dm.data_val)
    n_batches = max(n_train // dm.batch_size, 1)  # drop_last on the training loader
    val_s = n_val / (examples / (steps * eval_step))
    kinds = {"teacher": "teacher", "kd_pretrain": "kd", "dense": "dense", "retrain_kd": "masked_kd", "retrain_ce": "masked"}
    fig["stage_epoch_s"] = {stage: n_batches * fig[f"{kind}_step_s"] + val_s for stage, kind in kinds.items()}
    header = {
        "modality": "text", "dataset": dm.name, "student": str(cfg.model.name), "teacher": str(cfg.teacher.net.name),
        "batch": int(dm.batch_size), "eval_batch": int(dm.eval_batch_size), "max_length": int(dm.max_length),
        "mean_length": int(dm.mean_length), "precision": bench.precision, "loader": str(cfg.data.get("loader", "torch")),
        "sparsity": float(cfg.pruning.sparsity), "n_train": n_train, "n_val": n_val, "n_test": len(dm.data_test),
        "sizes_from": "data on disk", "compile_in_recipe": bool(cfg.get("compile", False)), "modes": {},
    }
    return header, fig


def print_text_table(doc: dict, names: list[str]) -> None:
    rows = []
    for name in names:
        entry = doc["recipes"][name]
        if entry.get("modality") != "text":
            continue
        for mode, f in entry["modes"].items():
            rows.append((f"{name} b{entry['batch']}", mode, f"{f['model_tok_s']:,.0f}", f"{f['dense_tok_s']:,.0f}",
                         f"{f['masked_over_dense']:.3f}", f"{f['kd_tok_s']:,.0f}", f"{f['masked_kd_over_kd']:.3f}",
                         f"{f['data_tok_s']:,.0f}", f"{f['padded_over_real']:.3f} ({f['padded_to_max_over_real']:.2f} at max)"))
    if not rows:
        return
    head = ("text recipe", "mode", "model tok/s", "dense tok/s", "masked/dense", "KD tok/s", "masked+KD/KD",
            "data tok/s", "padded/real tokens")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    print("  real (non-padding) tokens per second; padded/real: tokens processed per real token (per-batch padding)")
    for r in [head, *rows]:
        print("  " + "  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
