"""IMP and COLT: exact final sparsity, nested masks across rounds, COLT's intersection, errors, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import compose_cfg, read_json
from tgp.errors import ConfigError
from tgp.data.views import ClassSubsetDataModule
from tgp.methods.iterative import split_classes
from tgp.pruning.nested import exact_common_threshold, intersection, magnitude_mask, mask_counts
from tgp.pruning.schedules import check_rounds, rounds_needed
from tgp.pipeline import run_pipeline
from tgp.pruning.mask import load_mask

SMOKE = ["experiment=smoke", "pruning.sparsity=0.8", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "logger=none", "data.limit_test=64"]


def run(overrides: list[str], tmp: Path) -> tuple[dict, Path]:
    cfg = compose_cfg([*SMOKE, *overrides], tmp)
    run_dir = tmp / "run"
    return run_pipeline(cfg, run_dir), run_dir


def masks(run_dir: Path, stages: list[str]) -> list[dict]:
    return [load_mask(run_dir / s / "mask.pt") for s in stages]


def subset(a: dict, b: dict) -> bool:
    """Every weight kept by ``a`` is kept by ``b``."""
    return all(bool((a[n] & ~b[n]).sum() == 0) for n in a)


def removed(mask: dict) -> int:
    total, kept = mask_counts(mask)
    return total - kept


# -- pure helpers ------------------------------------------------------------------------------------
def test_rounds_needed():
    assert rounds_needed(0.5, 0.8) == 3  # 0.5, 0.25 > 0.2, 0.125 <= 0.2
    assert rounds_needed(0.5, 0.75) == 2  # lands exactly on the target
    assert rounds_needed(0.2, 0.8) == 8
    assert rounds_needed(0.2, 0.0) == 0


def test_magnitude_mask_is_nested_and_exact():
    g = torch.Generator().manual_seed(0)
    w = {"a": torch.randn(10, 10, generator=g), "b": torch.randn(37, generator=g)}
    first = magnitude_mask(w, 0.5, None)
    assert removed(first) == round(0.5 * 137)
    w2 = {n: torch.randn(t.shape, generator=g) * first[n] for n, t in w.items()}  # "retrained" weights
    second = magnitude_mask(w2, 0.8, first)
    assert removed(second) == round(0.8 * 137)
    assert subset(second, first)
    with pytest.raises(ValueError):
        magnitude_mask(w2, 0.3, first)  # would revive pruned weights


def test_exact_common_threshold_is_inside_both_masks():
    g = torch.Generator().manual_seed(1)
    a = {"x": torch.randn(20, 30, generator=g), "y": torch.randn(50, generator=g)}
    b = {"x": torch.randn(20, 30, generator=g), "y": torch.randn(50, generator=g)}
    prev = magnitude_mask(a, 0.4, None)
    mask, ma, mb = exact_common_threshold(a, b, 0.8, prev)
    assert removed(mask) == round(0.8 * 650)
    assert subset(mask, intersection(ma, mb))
    assert subset(mask, prev) and subset(ma, prev) and subset(mb, prev)


def test_split_classes_and_round_errors():  # a one-class dataset: test_colt_needs_two_classes
    a, b = split_classes(10, seed=0)
    assert len(a) == 5 and sorted(a + b) == list(range(10))
    assert split_classes(10, seed=0) == (a, b)
    a3, b3 = split_classes(3, seed=0)
    assert len(a3) == 1 and len(b3) == 2
    with pytest.raises(ConfigError, match=r"imp\.max_rounds.*imp\.rate=0\.1.*16 rounds"):
        check_rounds("imp", 0.1, 0.8, 3)


def test_class_subset_datamodule(tmp_path):
    from tgp.pipeline import build_datamodule

    dm = build_datamodule(compose_cfg(SMOKE, tmp_path))
    half = ClassSubsetDataModule(dm, [0, 3, 5])
    for loader in (half.train_dataloader(), half.val_dataloader(), half.test_dataloader()):
        labels = torch.cat([y for _, y in loader])
        assert len(labels) > 0 and set(labels.tolist()) <= {0, 3, 5}
    assert len(half.data_train) < len(dm.data_train)


# -- IMP end to end -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def imp_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("imp")
    row, run_dir = run(["method=imp", "method.rate=0.5"], tmp)
    return row, run_dir, tmp


def test_imp_exact_sparsity_and_nested_rounds(imp_run):
    row, run_dir, _ = imp_run
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["measured_sparsity"] == pytest.approx(0.8, abs=1e-4)
    final = load_mask(run_dir / "prune" / "mask.pt")
    total, _ = mask_counts(final)
    assert removed(final) == round(0.8 * total)
    assert metrics["measured_sparsity"] == removed(final) / total  # pruned weights are exactly the zeros
    rounds = masks(run_dir, ["imp_round_01", "imp_round_02"])
    assert [removed(m) for m in rounds] == [round(0.5 * total), round(0.75 * total)]
    chain = [*rounds, final]
    assert all(subset(later, earlier) for earlier, later in zip(chain, chain[1:]))
    assert not (run_dir / "imp_round_03").exists()  # the last round is prune + retrain
    # every training stage is counted: dense + 2 rounds + the final round's retraining
    assert metrics["epochs_total"] == 4 and metrics["epochs_imp_round_01"] == 1
    assert row["top1_dense_student"] is not None and "teacher" not in row["stages_skipped"]


def test_imp_rerun_skips_finished_rounds(imp_run):
    _, run_dir, tmp = imp_run
    for stage in ("prune", "retrain"):  # as if the job had died after round 2
        (run_dir / stage / "result.json").unlink()
    row, _ = run(["method=imp", "method.rate=0.5"], tmp)
    assert row["stages_skipped"] == ["init", "dense", "imp_round_01", "imp_round_02"]
    row, _ = run(["method=imp", "method.rate=0.5"], tmp)  # everything done: nothing recomputed
    assert row["stages_skipped"] == ["init", "dense", "imp_round_01", "imp_round_02", "prune", "retrain"]
    assert row["measured_sparsity"] == pytest.approx(0.8, abs=1e-4)


def test_imp_unreachable_target_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        run(["method=imp", "method.rate=0.1", "method.max_rounds=5"], tmp_path)
    msg = str(err.value)
    assert "method.rate=0.1" in msg and "method.max_rounds=5" in msg and "16 rounds" in msg
    assert not (tmp_path / "run" / "dense").exists()  # checked before any training


def test_imp_rewind_epoch_must_be_inside_the_round(tmp_path):
    with pytest.raises(ConfigError, match="method.rewind_epoch"):
        run(["method=imp", "method.rewind_epoch=1"], tmp_path)  # 1 epoch per round in the smoke setting


def test_imp_rewinds_to_an_early_epoch(tmp_path):
    row, run_dir = run(["method=imp", "method.rate=0.5", "pruning.sparsity=0.5", "method.epochs_per_round=2",
                        "method.rewind_epoch=1"], tmp_path)
    init = torch.load(run_dir / "init" / "net.pt", weights_only=True)
    rewind = torch.load(run_dir / "dense" / "rewind.pt", weights_only=True)
    dense = torch.load(run_dir / "dense" / "net.pt", weights_only=True)
    name = "conv1.weight"
    assert not torch.equal(rewind[name], init[name]) and not torch.equal(rewind[name], dense[name])
    assert row["measured_sparsity"] == pytest.approx(0.5, abs=1e-4)
    assert row["epochs_total"] == 3  # dense 2 + the final ticket: the sparse budget retrain.epochs (1)


# -- COLT end to end ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def colt_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("colt")
    row, run_dir = run(["method=colt", "method.rate=0.6"], tmp)
    return row, run_dir, tmp


def test_colt_exact_sparsity_intersection_and_nesting(colt_run):
    row, run_dir, _ = colt_run
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["measured_sparsity"] == pytest.approx(0.8, abs=1e-4)
    final = load_mask(run_dir / "prune" / "mask.pt")
    total, _ = mask_counts(final)
    assert removed(final) == round(0.8 * total)

    rounds = sorted(p.name for p in run_dir.iterdir() if p.name.startswith("colt_round_") and len(p.name) == 13)
    assert rounds, "at least one intermediate round"
    previous = None
    for name in rounds:
        folder = run_dir / name
        m, ma, mb = (load_mask(folder / f) for f in ("mask.pt", "mask_a.pt", "mask_b.pt"))
        assert all(torch.equal(m[n], ma[n] & mb[n]) for n in m)  # the round keeps the intersection
        assert (folder.parent / f"{name}_a" / "net.pt").exists() and (folder.parent / f"{name}_b" / "net.pt").exists()
        if previous is not None:
            assert subset(m, previous) and subset(ma, previous) and subset(mb, previous)
        previous = m
    fa, fb = load_mask(run_dir / "prune" / "mask_a.pt"), load_mask(run_dir / "prune" / "mask_b.pt")
    assert subset(final, intersection(fa, fb))  # the exact-count last round stays inside A ∩ B
    assert subset(final, previous)
    # the two halves trained on disjoint class sets that cover every class
    ra = read_json(run_dir / f"{rounds[0]}_a" / "result.json")["classes"]
    rb = read_json(run_dir / f"{rounds[0]}_b" / "result.json")["classes"]
    assert not set(ra) & set(rb) and sorted(ra + rb) == list(range(10))
    assert metrics["epochs_total"] == 2 * (len(rounds) + 1) + 1


def test_colt_rerun_skips_every_finished_stage(colt_run):
    first, run_dir, tmp = colt_run
    row, _ = run(["method=colt", "method.rate=0.6"], tmp)
    assert "retrain" in row["stages_skipped"] and "prune" in row["stages_skipped"]
    assert len(row["stages_skipped"]) == len([k for k in first if k.startswith("epochs_") and k != "epochs_total"])
    assert row["measured_sparsity"] == first["measured_sparsity"]


def test_colt_needs_two_classes_per_half(tmp_path):
    # The synthetic DataModule itself refuses one class (Hydra's instantiate wraps its ConfigError) ...
    with pytest.raises(Exception) as err:
        run(["method=colt", "data=synthetic", "data.num_classes=1", "data.image_size=8"], tmp_path)
    cause = err.value if isinstance(err.value, ConfigError) else err.value.__cause__
    assert isinstance(cause, ConfigError) and "num_classes" in str(cause)
    # ... and COLT refuses data with fewer than two classes per half (or a regression target), before any
    # stage runs, naming the methods that do run there.
    from types import SimpleNamespace

    from tgp.checks.job import check_method_fits_data
    from tgp.methods import get_method

    spec = get_method("colt")
    assert spec.unsupported(SimpleNamespace(num_classes=4, regression=False, modality="image")) is None
    for dm in (SimpleNamespace(name="three", num_classes=3, regression=False, modality="image"),
               SimpleNamespace(name="scores", num_classes=1, regression=True, modality="text")):
        with pytest.raises(ConfigError, match=r"^method='colt': COLT .*Fix: use a method that runs on .*imp.*tgp"):
            check_method_fits_data(spec, dm)
    with pytest.raises(ConfigError, match="at least 4 classes"):
        run(["method=colt", "data=synthetic", "data.num_classes=3", "data.image_size=8"], tmp_path)
