"""Iterative magnitude pruning baselines: IMP / lottery tickets, and COLT (METHOD.md §2).

**IMP** (Frankle & Carbin, ICLR 2019; paper = theirs). Stages in ``<run_dir>``::

    init            the seeded initialization θ₀ (net.pt), no training
    dense           θ₀ trained with CE for imp.epochs_per_round epochs (rewind.pt: the weights
                    after imp.rewind_epoch epochs, when imp.rewind_epoch > 0)
    imp_round_01    prune imp.rate of the remaining prunable weights of the previous round's
    imp_round_02    trained net (global |θ|), rewind to θ₀ (or to rewind.pt), train with the mask
    ...
    prune           the LAST round's pruning: exactly round(s·N) weights removed (s = pruning.sparsity)
    retrain         the last round's training (rewind, train with the final mask): the final model

Round r < R keeps a fraction (1 − rate)^r of the prunable weights; R is the smallest round
count with (1 − rate)^R ≤ 1 − s, so the last round removes at most ``rate`` of what is left,
chosen to land exactly on the target. Masks are nested: a pruned weight stays pruned (its score
is −∞ in every later round). The intermediate rounds do not depend on the target sparsity, so
runs at several sparsities share them through the stage store.

**COLT** (Hossain et al., arXiv 2212.12770). The classes are split (seeded, ``colt.split_seed``)
into halves A and B. Round r: two copies of θ₀ ⊙ m_{r−1} are trained, one on the training
samples of A only, one on B only (stages ``colt_round_XX_a``/``_b``); each is magnitude-pruned
by ``colt.rate`` of the remaining weights (``mask_a``, ``mask_b``); the round's mask is their
intersection (stage ``colt_round_XX``: ``mask.pt``, ``mask_a.pt``, ``mask_b.pt``). The next round
rewinds both copies to θ₀. The final model is θ₀ ⊙ m trained on all data (stage ``retrain``).

Choices that are ours (not the papers'), each a setting or written here:

* Prunable weights are those of :func:`tgp.pruning.mask.prunable_parameters` (Conv2d and Linear
  weights, minus ``pruning.exclude``), for IMP and for COLT. METHOD.md describes COLT on conv
  weights; ``pruning.exclude=[fc]`` restricts it to those. Using the same set as every other
  method keeps "measured sparsity" comparable.
* Exact final count, IMP: the last round's global threshold targets round(s·N) over all
  prunable weights with the already pruned ones at −∞.
* Exact final count, COLT: the intersection removes at least ``rate`` of the remaining weights
  and usually more, so it can overshoot the target. The round whose intersection would reach or
  pass the target is the last one and is computed by the ``prune`` stage instead: it ranks the
  weights alive in m_{r−1} by ``min(|θ_A|, |θ_B|)`` and keeps exactly N − round(s·N). With t the
  smallest kept score, ``mask_a = |θ_A| ≥ t`` and ``mask_b = |θ_B| ≥ t`` (within m_{r−1}) are
  the two networks pruned at one common magnitude threshold, and the final mask ⊆ mask_a ∩ mask_b
  (equal up to ties at t). Both are saved in ``prune/``.
* COLT's halves: with an odd class count B gets the extra class. Each half-network keeps the
  full classifier (all logits, CE over all classes), trained, validated and tested on its
  half's samples only.
* Training budget: every round (and IMP's dense training) runs ``<method>.epochs_per_round``
  epochs at ``<method>.lr`` with a fresh optimizer and LR schedule, CE loss, no teacher; with
  ``imp.rewind_epoch = k > 0`` a round still trains the full ``epochs_per_round`` epochs from the
  rewound weights (Frankle et al. 2020 continue the schedule from k instead).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from tgp.errors import ConfigError
from tgp.io import atomic_save_json, atomic_torch_save
from tgp.methods.common import build_net, ce_loss, load_stage_net, make_module
from tgp.pruning.mask import Mask, apply_mask, load_mask, prunable_parameters, save_mask, sparsity_report
from tgp.pruning.threshold import check_sparsity, global_threshold
from tgp.stages import StageRunner

log = logging.getLogger("tgp")

_EPS = 1e-9


# -- pure helpers ----------------------------------------------------------------------------------
def check_rate(setting: str, rate) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < float(rate) < 1.0:
        raise ConfigError(setting, rate, "the fraction of the remaining weights pruned per round must lie in (0, 1).",
                          f"use e.g. {setting}=0.2.")
    return float(rate)


def rounds_needed(rate: float, sparsity: float, limit: int = 10_000) -> int:
    """Smallest R with (1 − rate)^R ≤ 1 − sparsity (0 for sparsity 0); ``limit + 1`` if larger than ``limit``."""
    density, rounds = 1.0, 0
    while density > (1.0 - sparsity) + _EPS:
        if rounds > limit:
            return limit + 1
        density *= 1.0 - rate
        rounds += 1
    return rounds


def check_round_schedule(prefix: str, node, sparsity) -> tuple[float, float, int, int]:
    """``(target, rate, rounds, epochs_per_round)`` of an iterative method, each checked with a clear error."""
    target = check_sparsity(sparsity)
    rate = check_rate(f"{prefix}.rate", node.rate)
    rounds = check_rounds(prefix, rate, target, node.max_rounds)
    epochs = int(node.epochs_per_round)
    if epochs < 1:
        raise ConfigError(f"{prefix}.epochs_per_round", epochs, "every round must train at least one epoch.", "use e.g. 10.")
    return target, rate, rounds, epochs


def check_rounds(prefix: str, rate: float, sparsity: float, max_rounds) -> int:
    """Rounds needed to reach ``sparsity`` at ``rate``; a :class:`ConfigError` if above ``max_rounds``."""
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
        raise ConfigError(f"{prefix}.max_rounds", max_rounds, "must be an integer >= 1.", f"use e.g. {prefix}.max_rounds=30.")
    needed = rounds_needed(rate, sparsity, limit=max_rounds)
    if needed > max_rounds:
        exact = rounds_needed(rate, sparsity, limit=100_000)
        min_rate = 1.0 - (1.0 - sparsity) ** (1.0 / max_rounds)
        raise ConfigError(
            f"{prefix}.max_rounds", max_rounds,
            f"reaching pruning.sparsity={sparsity} while pruning {prefix}.rate={rate} of the remaining weights per "
            f"round takes {exact} rounds ((1-{rate})^{exact} <= {1 - sparsity:.6g}), more than {prefix}.max_rounds={max_rounds}.",
            f"raise {prefix}.max_rounds to at least {exact}, or raise {prefix}.rate to at least {min_rate:.4f}.",
        )
    return needed


def round_sparsity(rate: float, r: int) -> float:
    """Sparsity after ``r`` rounds that each prune ``rate`` of the remaining weights."""
    return 1.0 - (1.0 - rate) ** r


def magnitude_mask(weights: dict[str, Tensor], sparsity: float, previous: Mask | None = None,
                   min_layer_density: float = 0.0) -> Mask:
    """Global magnitude mask removing exactly ``round(sparsity · N)`` weights, nested in ``previous``.

    Weights already pruned by ``previous`` score −∞, so they are removed first and stay removed
    (the target must remove at least as many as ``previous`` did).
    """
    scores = {}
    for n, w in weights.items():
        s = w.detach().abs().float().cpu()
        if previous is not None:
            s = s.masked_fill(~previous[n].cpu(), float("-inf"))
        scores[n] = s
    return _nested_threshold(scores, sparsity, previous, min_layer_density)


def _nested_threshold(scores: dict[str, Tensor], sparsity: float, previous: Mask | None,
                      min_layer_density: float) -> Mask:
    mask = global_threshold(scores, sparsity, min_layer_density=min_layer_density)
    if previous is not None:
        grown = [n for n in mask if bool((mask[n] & ~previous[n].cpu()).any())]
        if grown:
            raise ValueError(f"target sparsity {sparsity} is below the previous mask's: it would revive weights of {grown}")
    return mask


def mask_counts(mask: Mask) -> tuple[int, int]:
    """``(total, kept)`` over a mask."""
    return sum(m.numel() for m in mask.values()), sum(int(m.sum()) for m in mask.values())


def intersection(a: Mask, b: Mask) -> Mask:
    return {n: a[n] & b[n] for n in a}


def exact_common_threshold(weights_a: dict[str, Tensor], weights_b: dict[str, Tensor], sparsity: float,
                           previous: Mask | None, min_layer_density: float = 0.0) -> tuple[Mask, Mask, Mask]:
    """COLT's last round at an exact count (ours): ``(mask, mask_a, mask_b)``.

    ``mask`` keeps the ``N − round(s·N)`` weights alive in ``previous`` with the largest
    ``min(|θ_A|, |θ_B|)``; ``mask_a``/``mask_b`` are A and B pruned at the common magnitude
    threshold ``t`` (the smallest kept score), so ``mask ⊆ mask_a ∩ mask_b``.
    """
    scores = {}
    for n in weights_a:
        s = torch.minimum(weights_a[n].detach().abs().float().cpu(), weights_b[n].detach().abs().float().cpu())
        if previous is not None:
            s = s.masked_fill(~previous[n].cpu(), float("-inf"))
        scores[n] = s
    mask = _nested_threshold(scores, sparsity, previous, min_layer_density)
    kept_scores = [scores[n][mask[n]] for n in mask if mask[n].any()]
    t = min(float(s.min()) for s in kept_scores) if kept_scores else float("inf")
    alive = previous if previous is not None else {n: torch.ones_like(m) for n, m in mask.items()}
    mask_a = {n: (weights_a[n].detach().abs().float().cpu() >= t) & alive[n].cpu() for n in mask}
    mask_b = {n: (weights_b[n].detach().abs().float().cpu() >= t) & alive[n].cpu() for n in mask}
    return mask, mask_a, mask_b


def split_classes(num_classes: int, seed: int) -> tuple[list[int], list[int]]:
    """A seeded split of the classes into halves A (⌊C/2⌋ classes) and B (the rest)."""
    if num_classes < 2:
        raise ConfigError("data.num_classes", num_classes,
                          "COLT trains one network per half of the classes and needs at least 2 classes.",
                          "use a dataset with 2 or more classes, or another method.")
    perm = torch.randperm(num_classes, generator=torch.Generator().manual_seed(int(seed))).tolist()
    half = num_classes // 2
    return sorted(perm[:half]), sorted(perm[half:])


# -- data: the training samples of some classes ---------------------------------------------------------
def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Labels of a dataset: read off ``targets`` of a ``TransformedSubset``'s source when there is one."""
    source, indices = getattr(dataset, "dataset", None), getattr(dataset, "indices", None)
    targets = getattr(source, "targets", None) if source is not None else None
    if targets is not None and indices is not None:
        return np.asarray(targets)[np.asarray(indices)]
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))])


class _Indexed(Dataset):
    def __init__(self, dataset: Dataset, indices: np.ndarray):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[int(self.indices[i])]


class ClassSubsetDataModule(L.LightningDataModule):
    """The train/val/test samples of ``classes`` only, reusing ``base``'s datasets and loader settings.

    Labels keep their original index (the network keeps all its outputs).
    """

    def __init__(self, base, classes):
        super().__init__()
        base._require_setup() if hasattr(base, "_require_setup") else base.setup("fit")
        self.base, self.classes = base, sorted(int(c) for c in classes)
        self.name = f"{base.name}[{','.join(map(str, self.classes))}]"
        self.num_classes, self.in_channels, self.image_size = base.num_classes, base.in_channels, base.image_size
        self.batch_size = base.batch_size
        self.eval_batch_size = getattr(base, "eval_batch_size", base.batch_size)
        self.data_train = self._only(base.data_train)
        self.data_val = self._only(base.data_val)
        self.data_test = self._only(base.data_test)
        self.data_score = self._only(base.data_score)
        if len(self.data_train) == 0:
            raise ConfigError("data", base.name, f"the training split holds no sample of classes {self.classes}.",
                              "use more training data (data.limit_train).")

    def _only(self, dataset: Dataset) -> Dataset:
        labels = dataset_labels(dataset)
        return _Indexed(dataset, np.flatnonzero(np.isin(labels, self.classes)))

    def _loader(self, dataset, batch_size: int, shuffle: bool, drop_last: bool = False, generator=None) -> DataLoader:
        b = self.base
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                          num_workers=b.num_workers, pin_memory=b.pin_memory,
                          persistent_workers=b.persistent_workers, generator=generator)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data_train, self.batch_size, True, drop_last=len(self.data_train) > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data_val, self.eval_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, self.eval_batch_size, False)

    def score_dataloader(self, batch_size: int | None = None) -> DataLoader:
        generator = torch.Generator().manual_seed(int(getattr(self.base, "score_seed", 0)))
        return self._loader(self.data_score, batch_size or self.eval_batch_size, True, generator=generator)


# -- stages shared by IMP and COLT ----------------------------------------------------------------------
def budget(epochs: int, lr: float) -> DictConfig:
    return OmegaConf.create({"epochs": int(epochs), "lr": float(lr)})


def init_stage(runner: StageRunner) -> None:
    """The seeded initialization θ₀ of the student (``init/net.pt``): what every round rewinds to."""

    def run(folder: Path) -> dict:
        atomic_torch_save(build_net(runner, runner.cfg.model).state_dict(), folder / "net.pt")
        return {"epochs": 0}

    runner.run("init", ("model",), run)


def _weights(runner: StageRunner, path: Path) -> torch.nn.Module:
    net = build_net(runner, runner.cfg.model)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net


def _prunable(net, cfg: DictConfig) -> dict[str, Tensor]:
    return prunable_parameters(net, list(cfg.pruning.exclude))


def _save_mask(mask: Mask, folder: Path, target: float | None, net, extra: dict | None = None, name: str = "mask") -> dict:
    save_mask(mask, folder / f"{name}.pt")
    report = sparsity_report(mask, net, target=target)
    if extra:
        report.update(extra)
    atomic_save_json(report, folder / f"sparsity_report{'' if name == 'mask' else '_' + name[len('mask_'):]}.json")
    return report


def train_masked(runner: StageRunner, stage: str, folder: Path, start: Path, mask: Mask | None, b: DictConfig) -> dict:
    """Train the weights at ``start`` with ``mask`` (CE, no teacher) for ``b.epochs``; result of ``runner.fit``."""
    net = _weights(runner, start)
    L.seed_everything(int(runner.cfg.seed), workers=True, verbose=False)
    module = make_module(runner, net, ce_loss(), stage, b, mask=mask)
    return runner.fit(stage, folder, module, int(b.epochs))


# -- IMP ----------------------------------------------------------------------------------------
class _SaveAtEpoch(L.Callback):
    """Save the network's weights after ``epoch`` training epochs (IMP's rewind point)."""

    def __init__(self, epoch: int, path: Path):
        self.epoch, self.path = epoch, Path(path)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 == self.epoch and trainer.is_global_zero:
            atomic_torch_save({k: v.detach().cpu() for k, v in pl_module.net.state_dict().items()}, self.path)


def run_imp(runner: StageRunner) -> str:
    """Iterative magnitude pruning with rewinding (lottery tickets); returns ``"retrain"``."""
    cfg = runner.cfg
    c = cfg.imp
    target, rate, n_rounds, epochs = check_round_schedule("imp", c, cfg.pruning.sparsity)
    rewind = int(c.rewind_epoch)
    if not 0 <= rewind < epochs:
        raise ConfigError("imp.rewind_epoch", rewind,
                          f"the rewind point must lie in [0, imp.epochs_per_round={epochs}).",
                          "use 0 (rewind to initialization) or a small epoch such as 1.")
    b = budget(epochs, float(c.lr))
    min_density = float(cfg.pruning.min_layer_density)
    train_nodes = ("model", "imp.epochs_per_round", "imp.lr", "imp.rewind_epoch")
    round_nodes = (*train_nodes, "imp.rate", "pruning.exclude", "pruning.min_layer_density")

    init_stage(runner)

    def dense(folder: Path) -> dict:
        callbacks = [_SaveAtEpoch(rewind, folder / "rewind.pt")] if rewind else []
        net = _weights(runner, runner.run_dir / "init" / "net.pt")
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
        module = make_module(runner, net, ce_loss(), "dense", b)
        return runner.fit("dense", folder, module, epochs, callbacks=callbacks)

    runner.run("dense", train_nodes, dense, parent="init")
    rewind_to = (runner.run_dir / "dense" / "rewind.pt") if rewind else (runner.run_dir / "init" / "net.pt")

    def prune_from(prev_stage: str, prev_mask_stage: str | None, sparsity: float, folder: Path, r: int):
        trained = load_stage_net(runner, cfg.model, prev_stage)
        previous = load_mask(runner.run_dir / prev_mask_stage / "mask.pt", trained) if prev_mask_stage else None
        mask = magnitude_mask(_prunable(trained, cfg), sparsity, previous, min_density)
        report = _save_mask(mask, folder, sparsity, trained, {"round": r, "rate": rate, "score": "magnitude"})
        return trained, mask, report

    prev_stage, prev_mask_stage = "dense", None
    for r in range(1, n_rounds):
        name = f"imp_round_{r:02d}"

        def round_fn(folder: Path, r=r, name=name, prev_stage=prev_stage, prev_mask_stage=prev_mask_stage) -> dict:
            s_r = round_sparsity(rate, r)
            _, mask, report = prune_from(prev_stage, prev_mask_stage, s_r, folder, r)
            result = train_masked(runner, name, folder, rewind_to, mask, b)
            return {**result, "round": r, "sparsity": report["prunable"]["sparsity"]}

        runner.run(name, round_nodes, round_fn, parent=prev_stage)
        prev_stage = prev_mask_stage = name

    def prune(folder: Path) -> dict:
        trained, mask, report = prune_from(prev_stage, prev_mask_stage, target, folder, n_rounds)
        apply_mask(trained, mask)
        return {"epochs": 0, "round": n_rounds, "rounds": n_rounds, "sparsity": report["prunable"]["sparsity"],
                "top1_pruned": runner.evaluate(trained)}

    runner.run("prune", (*round_nodes, "pruning.sparsity"), prune, parent=prev_stage)

    def retrain(folder: Path) -> dict:
        mask = load_mask(runner.run_dir / "prune" / "mask.pt")
        return {**train_masked(runner, "retrain", folder, rewind_to, mask, b), "round": n_rounds}

    runner.run("retrain", round_nodes, retrain, parent="prune")
    return "retrain"


# -- COLT ---------------------------------------------------------------------------------------
def run_colt(runner: StageRunner) -> str:
    """Cyclic overlapping lottery tickets: intersect the tickets of two class halves; returns ``"retrain"``."""
    cfg = runner.cfg
    c = cfg.colt
    # The intersection removes at least `rate` of the remaining weights per round, so the
    # target is reached within the IMP round count at the same rate: check that bound up front.
    target, rate, max_rounds, epochs = check_round_schedule("colt", c, cfg.pruning.sparsity)
    classes_a, classes_b = split_classes(int(runner.dm.num_classes), int(c.split_seed))
    b = budget(epochs, float(c.lr))
    min_density = float(cfg.pruning.min_layer_density)
    halves = {"a": ClassSubsetDataModule(runner.dm, classes_a), "b": ClassSubsetDataModule(runner.dm, classes_b)}
    train_nodes = ("model", "colt.split_seed", "colt.epochs_per_round", "colt.lr", "colt.rate",
                   "pruning.exclude", "pruning.min_layer_density")
    init = runner.run_dir / "init" / "net.pt"

    init_stage(runner)
    prev_stage, previous = "init", None
    n_total = None
    for r in range(1, max_rounds + 1):
        prev_mask_path = None if previous is None else runner.run_dir / previous / "mask.pt"
        for half in ("a", "b"):
            stage = f"colt_round_{r:02d}_{half}"

            def train_half(folder: Path, stage=stage, half=half, prev_mask_path=prev_mask_path) -> dict:
                sub = copy.copy(runner)  # same runner, the half's data
                sub.dm = halves[half]
                mask = load_mask(prev_mask_path) if prev_mask_path else None
                classes = classes_a if half == "a" else classes_b
                return {**train_masked(sub, stage, folder, init, mask, b), "round": r, "classes": classes}

            runner.run(stage, train_nodes, train_half, parent=prev_stage)

        net_a = load_stage_net(runner, cfg.model, f"colt_round_{r:02d}_a")
        net_b = load_stage_net(runner, cfg.model, f"colt_round_{r:02d}_b")
        prev_mask = load_mask(prev_mask_path, net_a) if prev_mask_path else None
        w_a, w_b = _prunable(net_a, cfg), _prunable(net_b, cfg)
        n_total = sum(w.numel() for w in w_a.values())
        kept_prev = n_total if prev_mask is None else mask_counts(prev_mask)[1]
        s_round = 1.0 - kept_prev * (1.0 - rate) / n_total  # each network prunes `rate` of what is left
        mask_a = magnitude_mask(w_a, s_round, prev_mask, min_density)
        mask_b = magnitude_mask(w_b, s_round, prev_mask, min_density)
        inter = intersection(mask_a, mask_b)
        removed = n_total - mask_counts(inter)[1]
        info = {"round": r, "rate": rate, "classes_a": classes_a, "classes_b": classes_b, "score": "magnitude"}

        if removed < round(target * n_total):
            name = f"colt_round_{r:02d}"

            def combine(folder: Path, name=name) -> dict:
                report = _save_mask(inter, folder, None, net_a, info)
                _save_mask(mask_a, folder, s_round, net_a, info, name="mask_a")
                _save_mask(mask_b, folder, s_round, net_a, info, name="mask_b")
                return {"epochs": 0, "round": r, "sparsity": report["prunable"]["sparsity"]}

            runner.run(name, train_nodes, combine, parent=f"colt_round_{r:02d}_b")
            prev_stage = previous = name
            continue

        def prune(folder: Path) -> dict:
            if removed == round(target * n_total):  # the intersection lands on the target exactly
                mask, fa, fb = inter, mask_a, mask_b
            else:
                mask, fa, fb = exact_common_threshold(w_a, w_b, target, prev_mask, min_density)
            extra = {**info, "intersection_at_rate_sparsity": removed / n_total,
                     "final": "exact count by min(|θ_A|, |θ_B|) within the previous mask"}
            report = _save_mask(mask, folder, target, net_a, extra)
            _save_mask(fa, folder, None, net_a, extra, name="mask_a")
            _save_mask(fb, folder, None, net_a, extra, name="mask_b")
            return {"epochs": 0, "round": r, "rounds": r, "sparsity": report["prunable"]["sparsity"]}

        runner.run("prune", (*train_nodes, "pruning.sparsity"), prune, parent=f"colt_round_{r:02d}_b")
        break
    else:  # unreachable: the intersection prunes at least `rate` per round (see check_rounds)
        raise RuntimeError(f"COLT did not reach sparsity {target} within {max_rounds} rounds")

    final = budget(int(c.final_epochs), float(c.lr))

    def retrain(folder: Path) -> dict:
        mask = load_mask(runner.run_dir / "prune" / "mask.pt")
        return train_masked(runner, "retrain", folder, init, mask, final)

    runner.run("retrain", (*train_nodes, "colt.final_epochs"), retrain, parent="prune")
    return "retrain"


__all__ = [
    "ClassSubsetDataModule", "check_rate", "check_rounds", "exact_common_threshold", "intersection", "magnitude_mask",
    "mask_counts", "round_sparsity", "rounds_needed", "run_colt", "run_imp", "split_classes",
]
