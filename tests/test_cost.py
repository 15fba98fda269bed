"""Training cost: FLOPs per stage = flop_counter's per-example count × examples seen, teacher forward
only where the loss uses it, masks lower it; metrics.json splits own and shared stages; a sweep
counts every stage (by key) once."""

from __future__ import annotations

import copy

import pytest
import torch
from hydra.utils import instantiate
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from conftest import compose_cfg, read_json
from tgp.models import build_model
from tgp.pipeline import run_pipeline
from tgp.pruning.mask import load_mask
from tgp.measure.cost import job_cost_fields
from tgp.measure.flops import training_flops_per_example
from tgp.report.cost import cost_by_method, cost_table_markdown, stage_costs, sweep_total

SMOKE = ["experiment=smoke", "pruning.sparsity=0.9", "logger=none", "data.limit_test=32", "trainer.limit_val_batches=1"]
SHAPE = (1, 8, 8)  # digits
EXAMPLE = torch.zeros(1, *SHAPE)  # the example input the digits datamodule gives
EXAMPLES = 3 * 32  # trainer.limit_train_batches=3 full batches of data.batch_size=32 (drop_last) per epoch


# -- independent counts: flop_counter on fresh copies -------------------------------------------------
def counted(net: nn.Module, backward: bool) -> tuple[int, dict[str, int]]:
    """Total FLOPs of one example, forward (+ backward of the parameters), and per Conv2d/Linear layer.

    Per layer from the counter's forward attribution: a layer's backward is its weight gradient plus,
    unless its input is the image (the stem), its input gradient, each as costly as its forward
    (checked against the measured total below)."""
    net = copy.deepcopy(net).eval()
    x = torch.zeros(1, *SHAPE)
    with FlopCounterMode(display=False) as c:
        if backward:
            net(x).sum().backward()
        else:
            with torch.no_grad():
                net(x)
    with FlopCounterMode(display=False) as f, torch.no_grad():
        net(x)
    per = f.get_flop_counts()
    factor = (lambda n: 2 if n == "conv1" else 3) if backward else (lambda n: 1)
    layers = {n: factor(n) * sum(per.get(f"{type(net).__name__}.{n}", {}).values())
              for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert sum(layers.values()) == c.get_total_flops()  # ResNets: all counted work is in these layers
    return c.get_total_flops(), layers


def masked(total: int, layers: dict[str, int], mask: dict) -> int:
    return total - round(sum(layers[n[:-7]] * (1 - float(m.float().mean())) for n, m in mask.items()))


def test_per_example_flops_match_flop_counter_teacher_adds_its_forward_and_masks_lower_them():
    student, teacher = build_model("resnet20", num_classes=10, in_channels=1, width=8), \
        build_model("resnet20", num_classes=10, in_channels=1, width=16)
    fb, layers = counted(student, backward=True)
    fwd, _ = counted(student, backward=False)
    assert 2 * fwd < fb < 3 * fwd  # measured: the first layer computes no input gradient
    t_fwd, _ = counted(teacher, backward=False)
    assert training_flops_per_example(student, EXAMPLE) == (fb, fb)
    assert training_flops_per_example(student, EXAMPLE, teacher=teacher) == (fb + t_fwd, fb + t_fwd)
    # Half of every Conv2d/Linear kept: all counted work is in those layers, so half the FLOPs.
    g = torch.Generator().manual_seed(0)
    mask = {}
    for n, p in student.named_parameters():
        if n.endswith("weight") and p.ndim > 1:
            keep = torch.zeros(p.numel(), dtype=torch.bool)
            keep[torch.randperm(p.numel(), generator=g)[: p.numel() // 2]] = True
            mask[n] = keep.view_as(p)
    dense, nonzero = training_flops_per_example(student, EXAMPLE, teacher=teacher, mask=mask)
    assert dense == fb + t_fwd and nonzero == masked(fb, layers, mask) + t_fwd < dense
    assert abs((nonzero - t_fwd) - fb / 2) <= 0.01 * fb


def test_each_module_says_what_runs_per_training_example():
    """The modules' training_flops hooks against independent counts: the teacher only under a KD loss,
    SDP's dense copy (its features, no classifier) only with the cross-correlation term, CS-KD's
    partner half forward only."""
    from tgp.data import DigitsDataModule
    from tgp.distill.losses import DistillationLoss
    from tgp.lit import ClassifierModule
    from tgp.lit.gradual import SelfDistilledPruningModule
    from tgp.lit.self_distill import SelfDistillModule

    torch.manual_seed(0)
    example = DigitsDataModule(batch_size=8).example_input  # what Training.fit counts on
    assert example(3).shape == (3, *SHAPE) and example().dtype == torch.float32 and not example().any()
    student, teacher = build_model("resnet20", num_classes=10, in_channels=1, width=8), \
        build_model("resnet20", num_classes=10, in_channels=1, width=16)
    fb, _ = counted(student, backward=True)
    fwd, _ = counted(student, backward=False)
    t_fwd, _ = counted(teacher, backward=False)
    with FlopCounterMode(display=False) as c, torch.no_grad():
        copy.deepcopy(teacher).eval().forward_features(EXAMPLE)
    features = c.get_total_flops()
    assert 0 < features < t_fwd  # the dense copy's features: all but its classifier
    kd = ClassifierModule(student, DistillationLoss(kd_weight=0.5, confidence="batch"), teacher=teacher)
    ce = ClassifierModule(student, DistillationLoss(kd_weight=0.0), teacher=teacher)
    assert kd.training_flops(example).per_example() == (fb + t_fwd, fb + t_fwd)
    assert ce.training_flops(example).per_example() == (fb, fb)  # a teacher the loss does not use
    for cc, extra in ((0.5, features), (0.0, 0)):
        sdp = SelfDistilledPruningModule(student, dense=teacher, cc_weight=cc, off_diagonal_weight=0.005)
        assert sdp.training_flops(example).per_example() == (fb + extra, fb + extra)
    cskd = SelfDistillModule(student, regime="cskd", num_train=16).training_flops(example)
    assert cskd.batch(8) == (4 * fb + 4 * fwd, 4 * fb + 4 * fwd)
    pskd = SelfDistillModule(student, regime="pskd", num_train=16).training_flops(example)
    assert pskd.batch(8) == (8 * fb, 8 * fb)


def test_flops_of_integer_token_inputs_keep_their_dtype():
    """A text-shaped model (token ids -> embedding -> linear): FLOPs counted on the integer ids themselves
    (embedding lookups are no multiply-adds; the linear layer: 2·in·out forward, its weight and input
    gradients as much again each)."""
    from tgp.measure.flops import flops

    net = nn.Sequential(nn.Embedding(50, 8), nn.Flatten(), nn.Linear(8 * 6, 4))
    ids = torch.randint(0, 50, (5, 6))
    linear = 2 * 8 * 6 * 4
    assert flops(net, ids) == (linear, linear)
    assert training_flops_per_example(net, ids) == (3 * linear, 3 * linear)
    assert training_flops_per_example(net, lambda: ids) == (3 * linear, 3 * linear)  # a callable too


# -- two smoke jobs sharing teacher, KD pretraining and pruning ---------------------------------------
@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cost")
    out, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: one thread is as fast, and steady on a shared machine
    try:
        for kd in ("true", "false"):
            cfg = compose_cfg([*SMOKE, f"retrain.kd={kd}"], tmp)
            out[kd] = (run_pipeline(cfg, tmp / f"kd_{kd}"), tmp / f"kd_{kd}", cfg)
    finally:
        torch.set_num_threads(threads)
    return out


def test_stage_flops_are_per_example_count_times_examples_seen(jobs):
    row, run, cfg = jobs["true"]
    _, run_ce, _ = jobs["false"]
    student = instantiate(cfg.model, num_classes=10, in_channels=1)
    teacher = instantiate(cfg.teacher.net, num_classes=10, in_channels=1)
    s_fb, s_layers = counted(student, backward=True)
    t_fb, _ = counted(teacher, backward=True)
    t_fwd, _ = counted(teacher, backward=False)
    res = {s: read_json(run / s / "result.json") for s in ("teacher", "kd_pretrain", "prune", "retrain")}
    ce = read_json(run_ce / "retrain" / "result.json")
    for r in (res["teacher"], res["kd_pretrain"], res["retrain"], ce):
        assert r["train_examples"] == EXAMPLES and r["device"] == "cpu" and r["seconds"] > 0
    # Teacher: CE, its own forward + backward only.
    assert res["teacher"]["train_flops"] == res["teacher"]["train_flops_dense"] == EXAMPLES * t_fb
    # KD pretraining: the student's forward + backward and the teacher's forward.
    assert res["kd_pretrain"]["train_flops"] == res["kd_pretrain"]["train_flops_dense"] == EXAMPLES * (s_fb + t_fwd)
    # Retraining with KD: the mask lowers the student's share, the teacher stays dense.
    mask = load_mask(run / "prune" / "mask.pt")
    assert res["retrain"]["train_flops_dense"] == EXAMPLES * (s_fb + t_fwd)
    assert res["retrain"]["train_flops"] == EXAMPLES * (masked(s_fb, s_layers, mask) + t_fwd) < EXAMPLES * (s_fb + t_fwd)
    # Retraining with CE: no teacher forward.
    assert ce["train_flops_dense"] == EXAMPLES * s_fb and ce["train_flops"] == EXAMPLES * masked(s_fb, s_layers, mask)
    assert "train_flops" not in res["prune"] and row["train_flops_prune"] == 0  # no training step


def test_metrics_row_records_what_the_report_needs(jobs):
    """The report reads the method's dense stage, whether it uses a teacher and the dataset off the row."""
    from tgp.data import dataset_name

    row, _, cfg = jobs["true"]
    assert (row["dataset"], row["dense_stage"], row["uses_teacher"]) == (dataset_name(cfg.data), "kd_pretrain", True)
    assert row["dataset"] == "digits" and row["top1_dense_student"] is not None


def test_early_stopped_stage_records_the_epochs_it_trained_and_their_cost(tmp_path):
    """Early stopping (no improvement of at least 1.0 in accuracy: stops after the second epoch) ends the
    teacher at 2 of its 4 epochs: the result says so, and its cost is that of the epochs trained, counted
    against an independent count (the validation rows of metrics.csv, times the examples of an epoch)."""
    import csv

    cfg = compose_cfg(["experiment=smoke", "teacher.epochs=4", "stop_after=teacher", "callbacks.early_stopping.enabled=true",
                       "callbacks.early_stopping.patience=0", "callbacks.early_stopping.min_delta=1.0"], tmp_path)
    run_pipeline(cfg, tmp_path / "run")
    res = read_json(tmp_path / "run" / "teacher" / "result.json")
    with open(tmp_path / "run" / "teacher" / "metrics.csv", newline="") as f:
        validated = {r["epoch"] for r in csv.DictReader(f) if r.get("teacher/val/acc")}
    assert (res["epochs"], res["epochs_budget"], res["stopped_early"]) == (2, 4, True) and len(validated) == 2
    per_epoch = int(cfg.trainer.limit_train_batches) * int(cfg.data.batch_size)
    assert res["train_examples"] == 2 * per_epoch
    teacher = instantiate(cfg.teacher.net, num_classes=10, in_channels=1)
    t_fb, _ = counted(teacher, backward=True)
    assert res["train_flops"] == res["train_flops_dense"] == 2 * per_epoch * t_fb


def test_metrics_split_own_and_shared_stages(jobs):
    first, second = jobs["true"][0], jobs["false"][0]
    f = {s: first[f"train_flops_{s}"] for s in ("teacher", "kd_pretrain", "prune", "retrain")}
    assert first["stages_skipped"] == [] and first["cost_flops_shared"] == 0 and first["cost_seconds_shared"] == 0
    assert first["cost_flops_own"] == sum(f.values()) and first["cost_device"] == "cpu"
    assert second["stages_skipped"] == ["teacher", "kd_pretrain", "prune"]
    assert second["cost_flops_shared"] == f["teacher"] + f["kd_pretrain"]
    assert second["cost_flops_own"] == second["train_flops_retrain"] < first["train_flops_retrain"]
    assert second["cost_seconds_shared"] == pytest.approx(
        sum(first[f"seconds_{s}"] for s in ("teacher", "kd_pretrain", "prune")))
    assert second["cost_seconds_own"] == pytest.approx(second["seconds_retrain"])
    assert {k: v for k, v in second["stage_keys"].items() if k != "retrain"} == \
        {k: v for k, v in first["stage_keys"].items() if k != "retrain"}
    assert second["stage_keys"]["retrain"] != first["stage_keys"]["retrain"]
    # Epochs in full-data units: 3 of the 6 batches of the 192 training samples per epoch.
    assert first["student_epochs_equiv"] == pytest.approx(2 * 0.5) and first["teacher_epochs_equiv"] == pytest.approx(0.5)
    assert first["teacher_epochs"] == 1 and first["cost_unmeasured"] == []


def test_sweep_counts_a_shared_stage_once(jobs):
    rows = [jobs["true"][0], jobs["false"][0]]
    stages = stage_costs(rows)
    assert len(stages) == 5 and sorted(s["jobs"] for s in stages) == [1, 1, 2, 2, 2]
    f = rows[0]
    total = sweep_total(rows)
    assert total["flops_teacher"] == f["train_flops_teacher"]  # once, not twice
    assert total["flops"] == f["train_flops_teacher"] + f["train_flops_kd_pretrain"] + f["train_flops_retrain"] \
        + rows[1]["train_flops_retrain"]
    assert total["flops"] == rows[0]["cost_flops_own"] + rows[1]["cost_flops_own"]
    (tgp,) = cost_by_method(rows)
    assert tgp["flops"] == total["flops"] and tgp["seconds_device"] == "cpu" and tgp["seeds"] == 1
    variants = cost_by_method(rows, by=("method", "retrain_kd"))
    assert [v["flops"] for v in variants] == [r["cost_flops_own"] + r["cost_flops_shared"] for r in rows[::-1]]
    assert all(v["flops_teacher"] == f["train_flops_teacher"] for v in variants)  # charged to each variant
    assert "sweep, each stage once" in cost_table_markdown(rows)


# -- the sweep functions on hand-made rows ------------------------------------------------------------
def _row(method, seed, stages, skipped=()):
    results = {name: r for name, (_, r) in stages.items()}
    return {"method": method, "seed": seed, **{f"seconds_{s}": r.get("seconds") for s, r in results.items()},
            **job_cost_fields(results, {name: key for name, (key, _) in stages.items()}, skipped, 100)}


def test_cost_by_method_attribution_means_over_seeds_and_unmeasured_stages():
    def trained(flops, seconds=1.0, device="cpu"):
        return {"epochs": 1, "train_examples": 100, "train_flops": flops, "train_flops_dense": 2 * flops,
                "seconds": seconds, "device": device}

    rows = []
    for seed, scale in ((0, 1), (1, 3)):
        teacher = (f"t{seed}", trained(100 * scale))
        rows.append(_row("tgp", seed, {"teacher": teacher, "prune": (f"p{seed}", {"epochs": 0, "seconds": 0.5}),
                                       "retrain": (f"r{seed}", trained(10 * scale))}))
        rows.append(_row("magnitude", seed, {"teacher": teacher, "retrain": (f"m{seed}", trained(20 * scale))}, ["teacher"]))
    by = {r["method"]: r for r in cost_by_method(rows)}
    assert by["tgp"]["flops"] == (110 + 330) / 2 and by["magnitude"]["flops"] == (120 + 360) / 2
    assert by["tgp"]["flops_exclusive"] == (10 + 30) / 2 and by["tgp"]["flops_teacher"] == 200
    assert by["tgp"]["stages"] == 3 and by["tgp"]["seconds"] == 2.5 and by["tgp"]["seeds"] == 2
    assert sweep_total(rows)["flops"] == 100 + 10 + 20 + 300 + 30 + 60  # each teacher once
    assert rows[1]["cost_flops_shared"] == 100 and rows[1]["cost_flops_own"] == 20
    assert rows[0]["student_epochs_equiv"] == 1.0 and rows[0]["teacher_epochs_equiv"] == 1.0
    # A stage that trained without a FLOPs record (one computed before FLOPs were recorded): unmeasured, totals None.
    rows.append(_row("epsd", 0, {"warmup": ("w", {"epochs": 0.5, "steps": 3, "seconds": 1.0}),
                                 "retrain": ("e", trained(5, device="NVIDIA H100"))}))
    rows.append({"method": "epsd", "seed": 1, "status": "failed"})
    (epsd,) = [r for r in cost_by_method(rows) if r["method"] == "epsd"]
    assert epsd["flops"] is None and epsd["unmeasured"] == ["warmup"] and epsd["jobs_without_cost"] == 1
    assert epsd["seconds_device"] == "NVIDIA H100" and sweep_total(rows)["seconds_device"] == "mixed: NVIDIA H100, cpu"
    assert sweep_total(rows)["flops"] is None and rows[-2]["cost_unmeasured"] == ["warmup"]
