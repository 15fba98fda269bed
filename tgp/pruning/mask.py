"""Masks: which parameters are prunable, how masks are applied, saved, loaded and reported.

A mask is a plain ``{param_name: BoolTensor}`` (True = kept), keyed like ``named_parameters()``,
so it survives ``state_dict`` round-trips, deepcopy, DDP and ``torch.compile`` untouched.
"""

from __future__ import annotations

import fnmatch
import logging
import sys
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from tgp.errors import CheckpointMismatchError, ConfigError
from tgp.io import atomic_save_json, atomic_torch_save

Mask = dict[str, Tensor]

MASK_FILE = "mask.pt"  # a stage's mask (save_mask), and the run folder's copy of the final one
SPARSITY_REPORT_FILE = "sparsity_report.json"  # sparsity_report() of that mask, beside it
# The stage that held the final mask in run folders written before <run_dir>/mask.pt and metrics.json's
# `mask_stage` (see tgp.pipeline's run-directory contract).
LEGACY_MASK_STAGE = "prune"


def final_mask_path(run_dir: Path) -> Path:
    """A run folder's final mask: ``<run_dir>/mask.pt``, or ``prune/mask.pt`` in a run folder written before it."""
    path = Path(run_dir) / MASK_FILE
    return path if path.is_file() else Path(run_dir) / LEGACY_MASK_STAGE / MASK_FILE


def final_sparsity_report_path(run_dir: Path, row: dict) -> Path:
    """The sparsity report of a run's final mask: in the stage its metrics row names as ``mask_stage``."""
    return Path(run_dir) / str(row.get("mask_stage") or LEGACY_MASK_STAGE) / SPARSITY_REPORT_FILE


def _weight_layer_types() -> tuple[type, ...]:
    """Conv2d and Linear, plus Hugging Face's ``Conv1D`` (a Linear with a transposed weight, used by
    GPT-2-style models) when ``transformers`` is loaded — a model holding one has loaded it."""
    conv1d = getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)
    return (nn.Conv2d, nn.Linear) + ((conv1d,) if conv1d is not None else ())


def prunable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The modules whose ``weight`` may be pruned, by module name: what the model declares through a
    ``prunable_modules()`` method (a Transformer's encoder Linears, :mod:`tgp.models.text`), else every
    Conv2d, Linear and ``Conv1D`` (ours)."""
    declared = getattr(model, "prunable_modules", None)
    if callable(declared):
        return dict(declared())
    types = _weight_layer_types()
    return {name: mod for name, mod in model.named_modules() if isinstance(mod, types)}


def prunable_parameters(model: nn.Module, exclude: list[str] | tuple[str, ...] = ()) -> dict[str, nn.Parameter]:
    """Weights of the model's prunable modules (:func:`prunable_modules`), minus modules whose name
    matches an ``exclude`` pattern.

    Biases and normalization layers are never pruned. Patterns are shell-style
    (``fnmatch``) and are matched against module names, e.g. ``conv1`` or ``layers.3.*``.
    A pattern that matches no prunable module is a configuration error, not a silent no-op.
    """
    candidates = prunable_modules(model)
    for pattern in exclude:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in candidates):
            import difflib

            names = [n for n in candidates if n]
            deep = [n for n in names if n.count(".") >= 2]
            middle = deep or names
            examples = list(dict.fromkeys(names[:1] + middle[len(middle) // 2:][:1] + names[-1:]))
            last = (deep or [n for n in names if "." in n] or [""])[-1]
            glob = ".".join(last.split(".")[: 2 if last.count(".") >= 2 else 1]) + ".*" if last else None
            glob = glob if glob and any(fnmatch.fnmatchcase(n, glob) for n in names) else None
            close = difflib.get_close_matches(str(pattern), names, n=1, cutoff=0.6)
            raise ConfigError(
                "pruning.exclude",
                pattern,
                f"this pattern matches no prunable module of the model ({type(model).__name__}, "
                f"{len(candidates)} such modules); patterns are shell-style globs matched against whole module names.",
                (f"did you mean {close[0]}? " if close else "")
                + f"use module names such as {', '.join(examples)}"
                + (f", or a glob such as '{glob}'" if glob else "") + ".",
            )
    return {
        f"{name}.weight" if name else "weight": mod.weight
        for name, mod in candidates.items()
        if not any(fnmatch.fnmatchcase(name, p) for p in exclude)
    }


def check_mask_fits(mask: Mask, model: nn.Module, source: str = "mask") -> None:
    params = dict(model.named_parameters())
    for name, m in mask.items():
        if name not in params:
            raise CheckpointMismatchError(
                f"{source} does not fit the model: it has an entry for '{name}', which the model "
                f"({type(model).__name__}) does not have. Fix: prune again with the same model config, or point "
                "to the mask made for this architecture."
            )
        if tuple(m.shape) != tuple(params[name].shape):
            raise CheckpointMismatchError(
                f"{source} does not fit the model: '{name}' has shape {tuple(m.shape)} in the mask but "
                f"{tuple(params[name].shape)} in the model. Fix: prune again with the same model config (width, classes)."
            )


def masked_parameters(model: nn.Module, mask: Mask) -> tuple[list[Tensor], list[Tensor]]:
    """The parameters a mask covers and the masks, as two aligned lists (for foreach ops)."""
    params = dict(model.named_parameters())
    names = list(mask)
    return [params[n] for n in names], [mask[n] for n in names]


@torch.no_grad()
def apply_mask(model: nn.Module, mask: Mask) -> None:
    """Zero pruned weights in place: one foreach multiply over all masked tensors."""
    params, masks = masked_parameters(model, mask)
    if params:
        torch._foreach_mul_(params, [m.to(device=p.device, dtype=p.dtype) for p, m in zip(params, masks)])


def classifier_name(model: nn.Module) -> str | None:
    """The weight name of the classifier: the last ``nn.Linear`` of ``model`` (e.g. ``fc.weight``), None without one."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return (f"{names[-1]}.weight" if names[-1] else "weight") if names else None


def sparsity_report(mask: Mask, model: nn.Module | None = None, target: float | None = None) -> dict:
    """Per-tensor and global counts: total, kept, sparsity; plus the sparsity over all parameters.

    Layer collapse: ``empty_layers`` lists the tensors left without any weight;
    ``classifier`` is the classifier's weight (the model's last Linear; without a model, the last
    2-D tensor of the mask) when the mask covers it, and ``classes_without_weights`` the classes
    (rows) it keeps no weight of — such a class gets a constant logit (its bias). See
    :func:`warn_layer_collapse`.
    """
    layers = {}
    total = kept = 0
    for name, m in mask.items():
        n, k = m.numel(), int(m.sum())
        layers[name] = {"total": n, "kept": k, "sparsity": 1 - k / n}
        total, kept = total + n, kept + k
    if model is not None:
        classifier = classifier_name(model)
    else:
        classifier = next((n for n in reversed(list(mask)) if mask[n].dim() == 2), None)
    classifier = classifier if classifier in mask else None
    empty_classes = []
    if classifier is not None:
        rows = mask[classifier].reshape(mask[classifier].shape[0], -1)
        empty_classes = [int(i) for i in torch.nonzero(~rows.any(dim=1)).flatten().tolist()]
    report = {
        "target_sparsity": target,
        "prunable": {"total": total, "kept": kept, "sparsity": 1 - kept / max(total, 1)},
        "layers": layers,
        "empty_layers": [n for n, v in layers.items() if v["kept"] == 0],
        "classifier": classifier,
        "classes_without_weights": empty_classes,
    }
    if model is not None:
        n_all = sum(p.numel() for p in model.parameters())
        removed = total - kept
        report["all_parameters"] = {"total": n_all, "kept": n_all - removed, "sparsity": removed / n_all}
    return report


def warn_layer_collapse(report: dict, where: str = "pruning", *, one_shot: bool = True) -> str | None:
    """Warn (logger ``tgp`` and ``warnings.warn``) when :func:`sparsity_report` found emptied layers or
    classes without weights; returns the message (None when nothing collapsed). ``one_shot``: the mask came
    from the one-shot global threshold, where ``pruning.keep_class_rows`` applies (not IMP's or COLT's rounds)."""
    empty, classes = report.get("empty_layers") or [], report.get("classes_without_weights") or []
    if not empty and not classes:
        return None
    parts = []
    if empty:
        parts.append(f"removed every weight of {len(empty)} layer(s): {', '.join(empty)}")
    if classes:
        parts.append(f"left {len(classes)} class(es) without any classifier weight ({report.get('classifier')}): "
                     f"{', '.join(map(str, classes))} (their logits are constant)")
    fix = "pruning.min_layer_density (e.g. 0.01)" + (" and/or pruning.keep_class_rows=true" if one_shot else "")
    message = f"layer collapse in {where}: " + "; ".join(parts) + f". Set {fix} to prevent it."
    logging.getLogger("tgp").warning(message)
    warnings.warn(message, stacklevel=2)
    return message


def save_mask(mask: Mask, path: Path) -> None:
    atomic_torch_save({n: m.detach().to("cpu", torch.bool) for n, m in mask.items()}, path)


def write_mask(mask: Mask, folder: Path, report: dict, name: str = "mask") -> dict:
    """A stage's mask and its sparsity report side by side: ``<name>.pt`` and ``sparsity_report.json``
    (``mask_a.pt`` → ``sparsity_report_a.json``), each written atomically. Returns ``report``."""
    folder = Path(folder)
    save_mask(mask, folder / f"{name}.pt")
    suffix = "" if name == "mask" else "_" + name.removeprefix("mask_")
    atomic_save_json(report, folder / f"sparsity_report{suffix}.json")
    return report


def load_mask(path: Path, model: nn.Module | None = None) -> Mask:
    path = Path(path)
    if not path.is_file():
        raise CheckpointMismatchError(f"mask file {path} does not exist. Fix: run the prune stage first, or check the path.")
    mask = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(mask, dict) or not all(isinstance(m, Tensor) and m.dtype == torch.bool for m in mask.values()):
        raise CheckpointMismatchError(f"{path} is not a mask file ({{param_name: bool tensor}}). Fix: point to a mask.pt written by tgp (<run_dir>/mask.pt).")
    if model is not None:
        check_mask_fits(mask, model, source=str(path))
    return mask
