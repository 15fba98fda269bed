"""``tgp-eval`` (``python -m tgp.eval``): evaluate a trained student on a dataset's test split.

What it evaluates (positional, or the config's ``ckpt_path=``):

* a **run directory** (``outputs/runs/<name>``): its ``config.yaml``, ``student_sparse.pt`` and its
  final mask ``mask.pt`` (in a run folder written before that file: ``prune/mask.pt``). ``key=value``
  arguments change settings of that resolved config (e.g. ``data.root=/data``); config groups cannot
  be swapped there.
* a **state_dict** (``student_sparse.pt``, a stage's ``net.pt``) or a **Lightning checkpoint**
  (``last.ckpt``/``best.ckpt``: ``net.``-prefixed weights, the mask as buffers inside). The model and
  data come from Hydra overrides composed like ``tgp-run`` does (``model=resnet20_tiny data=digits``,
  ``experiment=smoke``, ``hydra.searchpath=[...]``); without any, from the run's ``config.yaml`` when
  the file sits in a run directory (or one folder below it), else the default config.

Reported (a table on stdout, the same as JSON in ``--out`` or next to the input: ``<run_dir>/eval.json``,
``<file stem>.eval.json``): top-1 (and top-5 with more than 10 classes), measured sparsity (over the
mask's weights when a mask is known, else over every Conv2d/Linear weight) and effective sparsity
(:mod:`tgp.measure.connectivity`), dense and nonzero FLOPs (:mod:`tgp.measure.flops`), and measured
inference latency (batch 1, median of ``--repeats``) and throughput (``--batch``) on this device,
for the weights as they are (with their zeros) against the same network with the zeros filled in.
Both run the same dense kernels: unstructured zeros do not make dense kernels faster, so the two
columns agree up to noise. The FLOPs ratio is what a sparse kernel could at best gain.

Before anything is loaded, the weights and the mask are checked against the sizes and SHA-256 hashes
their stage (``result.json``) or run (``metrics.json``) recorded (:mod:`tgp.integrity`). Errors (no
such file, a damaged file, a checkpoint that does not fit the model, missing data) are one paragraph
on stderr and exit code 2, like ``tgp-run``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from tgp.errors import CheckpointMismatchError, ConfigError, TGPError

_NOTE = ("latency/throughput: the weights with their zeros vs the same network with the zeros filled in run the same "
         "dense kernels, so unstructured sparsity does not speed them up; the FLOPs ratio is what a sparse kernel "
         "could at best gain.")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tgp-eval", description=__doc__.split("\n\n")[0],
                                epilog="Example: tgp-eval outputs/runs/<name>; tgp-eval student_sparse.pt experiment=smoke")
    p.add_argument("args", nargs="*", metavar="INPUT|key=value",
                   help="a run directory, a state_dict (.pt) or a Lightning checkpoint (.ckpt) (or ckpt_path=...), "
                        "then Hydra overrides")
    p.add_argument("--out", default=None, help="the JSON file (default: next to the input)")
    p.add_argument("--mask", default=None, help="a mask.pt for a state_dict (sparsity over its weights)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available, else cpu)")
    p.add_argument("--repeats", type=int, default=None, help="timed batch-1 forwards (default 200 on GPU, 50 on CPU)")
    p.add_argument("--batch", type=int, default=None, help="throughput batch size (default 256 on GPU, 64 on CPU)")
    p.add_argument("--no-timing", action="store_true", help="skip the latency/throughput measurement")
    return p


# -- what to evaluate ------------------------------------------------------------------------------
def _split(args: list[str]) -> tuple[str | None, list[str]]:
    inputs = [a for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    ckpt = [o for o in overrides if o.split("=", 1)[0].lstrip("+") == "ckpt_path"]
    if len(inputs) > 1:
        raise ConfigError("INPUT", inputs, "more than one input given.", "evaluate one run directory or checkpoint at a time.")
    path = inputs[0] if inputs else (ckpt[-1].split("=", 1)[1] if ckpt else None)
    if path in (None, "", "null"):
        raise ConfigError("ckpt_path", None, "nothing to evaluate.",
                          "give a run directory, a student_sparse.pt or a Lightning .ckpt: tgp-eval outputs/runs/<name>.")
    return path, [o for o in overrides if o not in ckpt]


def _run_dir_of(path: Path) -> Path | None:
    """The run directory a file sits in (its folder or the one above; the path is not resolved:
    stage folders are links into the stage store)."""
    for d in (path.parent, path.parent.parent):
        if (d / "config.yaml").is_file():
            return d
    return None


def _load_run_config(config: Path, overrides: list[str]) -> DictConfig:
    cfg = OmegaConf.load(config)
    if not overrides:
        return cfg
    for o in overrides:
        key = o.split("=", 1)[0]
        if key.startswith(("+", "~")) or "." not in key and isinstance(OmegaConf.select(cfg, key), DictConfig):
            raise ConfigError(key, o.split("=", 1)[1], f"{config} is a run's resolved config: its groups are fixed and "
                              "settings can only be changed (key.sub=value).",
                              "change single settings (e.g. data.root=/data), or evaluate the run's student_sparse.pt with "
                              "group overrides (tgp-eval <run>/student_sparse.pt model=... data=...).")
    OmegaConf.set_struct(cfg, True)
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    except Exception as e:  # noqa: BLE001 - an unknown key, a wrong type
        raise ConfigError(" ".join(overrides), None, f"does not apply to {config} ({str(e).splitlines()[0]}).",
                          "use keys that exist in that config.yaml.") from None


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from tgp.naming import register_resolvers
    from tgp.resources import CONFIG_DIR

    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name="eval"):
            return compose(config_name="config", overrides=overrides)
    except HydraException as e:
        raise ConfigError(" ".join(overrides), None, f"these overrides do not compose ({str(e).splitlines()[0]}).",
                          "use the overrides the model was trained with (`tgp-run --help` lists the groups).") from None
    finally:
        GlobalHydra.instance().clear()


def _lightning_mask(path: Path) -> dict | None:
    obj = torch.load(path, map_location="cpu", weights_only=False)
    state = obj.get("state_dict") if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        return None
    prefix = "mask_buffers."
    mask = {k[len(prefix):].replace("__", "."): v.to(torch.bool) for k, v in state.items() if k.startswith(prefix)}
    return mask or None


def resolve_input(path: str, overrides: list[str], mask_path: str | None = None) -> dict:
    """``{kind, weights, cfg, config_source, mask_path | lightning mask}`` for ``path``, or a one-paragraph error."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointMismatchError(
            f"ckpt_path={path!r}: no such file or directory. Fix: give a run directory (outputs/runs/<name>), its "
            "student_sparse.pt or a stage's last.ckpt, relative to the current directory or absolute.")
    if p.is_dir():
        config, weights = p / "config.yaml", p / "student_sparse.pt"
        if not config.is_file() or not weights.is_file():
            missing = "config.yaml" if not config.is_file() else "student_sparse.pt"
            raise CheckpointMismatchError(
                f"ckpt_path={path!r}: a directory without {missing}, so not a finished run directory. Fix: point to "
                "outputs/runs/<name> of a run that finished (it writes student_sparse.pt last), or to a checkpoint file.")
        from tgp.pruning.mask import final_mask_path

        mask = Path(mask_path) if mask_path else final_mask_path(p)
        return {"kind": "run_dir", "weights": weights, "cfg": _load_run_config(config, overrides),
                "config_source": str(config), "mask_path": mask if mask.is_file() or mask_path else None, "run_dir": p}
    kind = "lightning_ckpt" if p.suffix == ".ckpt" else "state_dict"
    run_dir = _run_dir_of(p)
    if overrides or run_dir is None:
        cfg, source = _compose(overrides), "conf/ + overrides: " + (" ".join(overrides) or "(none)")
    else:
        cfg, source = _load_run_config(run_dir / "config.yaml", []), str(run_dir / "config.yaml")
    return {"kind": kind, "weights": p, "cfg": cfg, "config_source": source,
            "mask_path": Path(mask_path) if mask_path else None, "run_dir": None}


def verify_inputs(src: dict) -> None:
    """Refuse weights or a mask that no longer match their records (:mod:`tgp.integrity`): one
    paragraph naming the file, exit code 2, instead of a traceback or a number from damaged weights."""
    from tgp.errors import DamagedArtifactError
    from tgp.integrity import file_problem

    for file in (src["weights"], src.get("mask_path")):
        if file is None or not Path(file).exists():
            continue
        problem = file_problem(Path(file))
        if problem:
            raise DamagedArtifactError(
                file, problem, "re-run the command that wrote it: tgp-run sets a damaged stage aside and computes it "
                "again (finished stages are reused), then evaluate again; `tgp-verify <run dir or stage store>` lists "
                "every damaged file.")


# -- measurements ----------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_forward(nets: dict[str, nn.Module], x: torch.Tensor, repeats: int, warmup: int = 5) -> dict[str, list[float]]:
    """Seconds per forward of each net on ``x``, interleaved (a, b, b, a, ...) so drift hits both alike."""
    device = x.device
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    times: dict[str, list[float]] = {k: [] for k in nets}
    names = list(nets)
    with autocast:
        for _ in range(warmup):
            for net in nets.values():
                net(x)
        for i in range(repeats):
            for k in (names if i % 2 == 0 else names[::-1]):
                _sync(device)
                t0 = time.perf_counter()
                nets[k](x)
                _sync(device)
                times[k].append(time.perf_counter() - t0)
    return times


@torch.no_grad()
def filled_copy(net: nn.Module, names: list[str], seed: int = 0) -> nn.Module:
    """A copy of ``net`` whose zero weights among ``names`` are filled with nonzero values (same shapes)."""
    dense = copy.deepcopy(net)
    params = dict(dense.named_parameters())
    g = torch.Generator().manual_seed(seed)
    for n in names:
        w = params[n]
        zero = w == 0
        if bool(zero.any()):
            scale = float(w[~zero].abs().mean()) if bool((~zero).any()) else 0.01
            fill = torch.randn(w.shape, generator=g).to(w) * scale
            w[zero] = torch.where(fill[zero] == 0, torch.full_like(fill[zero], scale), fill[zero])
    return dense


def measure_speed(net: nn.Module, names: list[str], example_input, device: torch.device,
                  repeats: int, batch: int) -> dict:
    """Batch-1 latency (median) and ``batch`` throughput, the weights with zeros vs zeros filled in, on
    ``example_input(batch_size)`` (the datamodule's: token ids for text are used as they are; float images
    are replaced by random values of their shape, channels-last on a GPU)."""
    nets = {"zeros": net, "dense": filled_copy(net, names)}
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    for k in nets:
        nets[k] = nets[k].to(device, memory_format=fmt).eval()
    g = torch.Generator().manual_seed(0)

    def inputs(n: int) -> torch.Tensor:
        x = example_input(n)
        if not x.is_floating_point():  # token ids: the model's real input format
            return x.to(device)
        x = torch.randn(x.shape, generator=g).to(device)
        return x.contiguous(memory_format=fmt) if x.ndim == 4 else x

    x1, xb = inputs(1), inputs(batch)
    lat = time_forward(nets, x1, repeats)
    thr = time_forward(nets, xb, max(3, repeats // 5))
    out = {"latency_repeats": repeats, "throughput_batch": batch, "throughput_repeats": max(3, repeats // 5)}
    for k in nets:
        out[f"latency_ms_{k}"] = 1000 * statistics.median(lat[k])
        out[f"throughput_{k}"] = batch / statistics.median(thr[k])
    out["latency_ratio_zeros_over_dense"] = out["latency_ms_zeros"] / out["latency_ms_dense"]
    return out


@torch.inference_mode()
def top5(net: nn.Module, dm, device: torch.device) -> float:
    from torchmetrics.classification import MulticlassAccuracy

    net = net.to(device).eval()
    metric = MulticlassAccuracy(dm.num_classes, top_k=5, average="micro").to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    with autocast:
        for x, y in dm.test_dataloader():
            metric.update(net(x.to(device)), y.to(device))
    return float(metric.compute())


def evaluate(path: str, overrides: list[str] = (), *, mask_path: str | None = None, device: str | None = None,
             repeats: int | None = None, batch: int | None = None, timing: bool = True) -> dict:
    """Evaluate ``path`` (see the module doc) and return the JSON row."""
    from tgp.pipeline import build_datamodule, instantiate_checked
    from tgp.pruning.mask import check_mask_fits, load_mask
    from tgp.measure.connectivity import effective_sparsity, nonzero_mask
    from tgp.measure.flops import count_parameters, flops, masked_sparsity
    from tgp.training import Training, load_net_weights

    src = resolve_input(path, list(overrides), mask_path)
    verify_inputs(src)
    cfg = src["cfg"]
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", device, "CUDA is not available on this machine.", "use --device cpu.")
    dm = build_datamodule(cfg)
    net = instantiate_checked(cfg.model, **dm.model_kwargs())
    load_net_weights(net, src["weights"], "ckpt_path")
    mask, mask_source = None, None
    if src["mask_path"] is not None:
        mask, mask_source = load_mask(src["mask_path"], net), str(src["mask_path"])
    elif src["kind"] == "lightning_ckpt":
        mask = _lightning_mask(src["weights"])
        if mask is not None:
            check_mask_fits(mask, net, source=f"the mask buffers in {src['weights']}")
            mask_source = f"{src['weights']} (mask buffers)"

    # The scores exactly as the run computed them (tgp.training.Training.evaluate), on the chosen device.
    eval_cfg = copy.deepcopy(cfg)
    OmegaConf.set_struct(eval_cfg, False)
    OmegaConf.update(eval_cfg, "trainer.accelerator", "gpu" if dev.type == "cuda" else "cpu", force_add=True)
    training = Training(eval_cfg, dm)
    net.eval()
    scored = training.evaluate(net)
    score_name = dm.scoring.name
    total, zeros = masked_sparsity(net, mask)
    params_total, params_nonzero = count_parameters(net)
    flops_dense, flops_nonzero = flops(net.cpu(), dm.example_input)
    row = {
        "input": str(path),
        "kind": src["kind"],
        "weights": str(src["weights"]),
        "config": src["config_source"],
        "mask": mask_source,
        "dataset": dm.name,
        "model": str(OmegaConf.select(cfg, "model.name", default="?")),
        "model_width": OmegaConf.select(cfg, "model.width", default=None),
        "num_classes": int(dm.num_classes),
        "num_test": len(dm.test_dataloader().dataset),
        "device": str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev),
        "cpu_threads": torch.get_num_threads(),
        "score_name": score_name,
        "score": scored.score,
        "metrics": scored.metrics,
        "groups": scored.groups,
        "top1": scored.score if score_name == "top1" else None,
        "top5": top5(net, dm, dev) if score_name == "top1" and dm.num_classes > 10 else None,
        "sparsity_over": "mask" if mask is not None else "conv_linear_weights",
        "measured_sparsity": zeros / max(total, 1),
        "sparsity_weights_total": total,
        "effective_sparsity": effective_sparsity(net.cpu(), nonzero_mask(net, mask), dm.example_input),
        "params_total": params_total,
        "params_nonzero": params_nonzero,
        "flops_dense": flops_dense,
        "flops_nonzero": flops_nonzero,
        "theoretical_speedup": flops_dense / max(flops_nonzero, 1),
    }
    if src["run_dir"] is not None and (src["run_dir"] / "metrics.json").is_file():
        run = json.loads((src["run_dir"] / "metrics.json").read_text())
        row["run_top1_last"] = run.get("top1_last")
        row["run_score_last"] = run.get("score_last", run.get("top1_last"))
        row["run_measured_sparsity"] = run.get("measured_sparsity")
    if timing:
        from tgp.pruning.mask import prunable_parameters

        names = list(mask) if mask is not None else list(prunable_parameters(net))
        cuda = dev.type == "cuda"
        row.update(measure_speed(net, names, dm.example_input, dev, repeats or (200 if cuda else 50),
                                 batch or (256 if cuda else 64)))
        row["timing_note"] = _NOTE
    return row


# -- output ----------------------------------------------------------------------------------------
def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def table(row: dict) -> str:
    width = f" w{row['model_width']}" if row.get("model_width") else ""
    mask = f"mask {row['mask']}" if row["mask"] else "no mask: all prunable weights"
    name = row.get("score_name") or "top1"
    label = "test top-1 %" if name == "top1" else f"test {name} %"
    lines = [
        f"tgp-eval {row['input']}: {row['model']}{width} on {row['dataset']} test split ({row['num_test']} examples), "
        f"{row['device']}" + (f", {row['cpu_threads']} threads" if row["device"] == "cpu" else ""),
        f"{label:<40}{_pct(row['score'])}" + (f"   (run's metrics.json: {_pct(row['run_score_last'])})"
                                             if row.get("run_score_last") is not None else ""),
    ]
    if len(row.get("metrics") or {}) > 1 or row.get("groups"):
        parts = [f"{k} {_pct(v)}" for k, v in row["metrics"].items()]
        parts += [f"{g}: " + ", ".join(f"{k} {_pct(v)}" for k, v in m.items()) for g, m in (row.get("groups") or {}).items()]
        lines.append(f"{'test metrics %':<40}" + "; ".join(parts))
    if row.get("top5") is not None:
        lines.append(f"{'test top-5 %':<40}{_pct(row['top5'])}")
    lines += [
        f"{'measured sparsity %':<40}{_pct(row['measured_sparsity'])}   (of {row['sparsity_weights_total']:,} weights; {mask})",
        f"{'effective sparsity %':<40}{_pct(row['effective_sparsity'])}   (weights on no input→output path)",
        f"{'nonzero / total parameters':<40}{row['params_nonzero']:,} / {row['params_total']:,}",
        f"{'FLOPs nonzero / dense (1 example)':<40}{row['flops_nonzero']:,} / {row['flops_dense']:,}"
        f"   ({row['theoretical_speedup']:.2f}x theoretical)",
    ]
    if "latency_ms_dense" in row:
        lines += [
            f"{'':<40}{'dense weights':>16}{'with zeros':>14}{'ratio':>9}",
            f"{'latency, batch 1, median of ' + str(row['latency_repeats']) + ' (ms)':<40}{row['latency_ms_dense']:>16.3f}"
            f"{row['latency_ms_zeros']:>14.3f}{row['latency_ms_zeros'] / row['latency_ms_dense']:>8.2f}x",
            f"{'throughput, batch ' + str(row['throughput_batch']) + ' (ex/s)':<40}{row['throughput_dense']:>16,.0f}"
            f"{row['throughput_zeros']:>14,.0f}{row['throughput_zeros'] / row['throughput_dense']:>8.2f}x",
            row["timing_note"],
        ]
    return "\n".join(lines)


def default_out(row: dict) -> Path:
    p = Path(row["input"])
    return p / "eval.json" if row["kind"] == "run_dir" else p.with_name(f"{p.stem}.eval.json")


def main(argv: list[str] | None = None) -> int:
    """``tgp-eval``: evaluate, print the table, write the JSON; 0, or exit code 2 with one paragraph."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        path, overrides = _split(args.args)
        row = evaluate(path, overrides, mask_path=args.mask, device=args.device, repeats=args.repeats,
                       batch=args.batch, timing=not args.no_timing)
    except TGPError as e:
        print(f"tgp-eval: error: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    out = Path(args.out) if args.out else default_out(row)
    print(table(row), flush=True)
    try:
        from tgp.io import atomic_save_json

        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_json(row, out)
        print(f"written: {out}", flush=True)
    except OSError as e:
        print(f"tgp-eval: error: --out={str(out)!r}: cannot write ({e.strerror}). Fix: pass a writable --out.",
              file=sys.stderr, flush=True)
        sys.exit(2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
