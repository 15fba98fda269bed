"""`python -m tgp.bench` writes its figures, and reproduce_table2's estimate reads them.

Timings themselves are never asserted (the machine's load decides them); what is checked is that
every figure is there, that the derived ratios and per-epoch seconds follow from the raw timings
as documented, that files merge per device, and that the Table 2 estimate uses them.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "reproduce_table2.py"


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory) -> Path:
    """One real bench run of the smoke recipe on this CPU, into ``<tmp>/outputs/bench/cpu.json``
    (the default path, seen from ``<tmp>``), merged into a file holding another recipe's entry."""
    cwd = tmp_path_factory.mktemp("bench")
    out = cwd / "outputs" / "bench" / "cpu.json"
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps({"device": "cpu", "recipes": {"earlier": {"modes": {}, "batch": 7}}}))
    proc = subprocess.run([sys.executable, "-m", "tgp.bench", "--recipes", "smoke", "--steps", "2", "--warmup", "1",
                           "--epoch-batches", "2", "--data-images", "64", "--repeats", "1"],
                          capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "masked/dense" in proc.stdout and "epoch/model" in proc.stdout and f"written: {Path('outputs/bench/cpu.json')}" in proc.stdout
    return out


def test_bench_json_has_every_figure_and_consistent_ratios(bench_file):
    doc = json.loads(bench_file.read_text())
    assert doc["device"] == "cpu" and doc["device_type"] == "cpu"
    assert doc["recipes"]["earlier"]["batch"] == 7  # merged, not overwritten
    entry = doc["recipes"]["smoke"]
    assert (entry["dataset"], entry["student"], entry["teacher"], entry["loader"]) == ("digits", "resnet20-w8", "resnet20-w8", "torch")
    assert entry["batch"] == 16 and entry["sizes_from"] == "data on disk" and entry["n_train"] == 256 - 64
    f = entry["modes"]["eager"]
    for kind in ("model", "dense", "kd", "masked", "masked_kd", "teacher"):
        assert f[f"{kind}_step_s"] > 0 and math.isclose(f[f"{kind}_img_s"], 16 / f[f"{kind}_step_s"])
    assert math.isclose(f["masked_over_dense"], f["masked_step_s"] / f["dense_step_s"])
    assert math.isclose(f["masked_kd_over_kd"], f["masked_kd_step_s"] / f["kd_step_s"])
    ep = f["epoch"]
    assert ep["train_images"] == 2 * 16 and math.isclose(ep["img_s"], ep["train_images"] / ep["seconds"])
    assert ep["seconds"] >= ep["train_s"] + ep["val_s"] - 1e-6
    assert math.isclose(f["epoch_over_model"], ep["img_s"] / f["model_img_s"])
    # Per-epoch seconds at the recipe's size, recomputed from the raw timings.
    overhead = max(0.0, ep["train_s"] / 2 - f["dense_step_s"])
    n_batches, val = entry["n_train"] // 16, entry["n_val"] / f["eval_img_s"]
    assert math.isclose(f["stage_epoch_s"]["retrain_kd"], n_batches * (f["masked_kd_step_s"] + overhead) + val)
    assert math.isclose(f["stage_epoch_s"]["teacher"],
                        n_batches * (f["teacher_step_s"] + overhead) + entry["n_val"] / f["teacher_eval_img_s"])
    assert f["prune_s"] > 0 and f["score_batches"] == 2


def test_bench_of_another_device_is_replaced_not_merged(tmp_path):
    from tgp.bench import default_path

    assert default_path("NVIDIA H100 80GB HBM3") == Path("outputs/bench/nvidia_h100_80gb_hbm3.json")
    assert default_path("cpu", tmp_path) == tmp_path / "bench" / "cpu.json"


def _rounds(method: str, s: float) -> int:
    return max(1, math.ceil(math.log(1 - s) / math.log(0.8) - 1e-9)) if method in ("imp", "colt") else 1


def test_reproduce_table2_dry_run_uses_the_measured_figures(bench_file):
    cwd = bench_file.parents[2]
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "1", "--dry-run"], capture_output=True, text=True,
                          cwd=cwd, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "MEASURED" in proc.stdout and "on one cpu" in proc.stdout and str(Path("outputs/bench/cpu.json")) in proc.stdout
    assert "ASSUMPTIONS" not in proc.stdout
    # The estimate, by hand from the bench file and the smoke budgets (1 epoch per stage).
    f = json.loads(bench_file.read_text())["recipes"]["smoke"]["modes"]["eager"]
    smoke = yaml.safe_load((ROOT / "conf" / "experiment" / "smoke.yaml").read_text())
    ladder = yaml.safe_load((ROOT / "conf" / "sweep" / "ladder_a.yaml").read_text())
    sparsities = [float(v) for v in str(ladder["hydra"]["sweeper"]["params"]["pruning.sparsity"]).split(",")]
    e = f["stage_epoch_s"]
    total = smoke["teacher"]["epochs"] * e["teacher"] + smoke["kd_pretrain"]["epochs"] * e["kd_pretrain"]
    jobs = [("tgp", True), ("tgp", False)] + [(m, False) for m in ("epsd", "colt", "imp", "magnitude", "snip")]
    for method, kd in jobs:
        for s in sparsities:
            total += 8.0 + f["prune_s"] + f["test_eval_s"]
            total += smoke["retrain"]["epochs"] * (e["retrain_kd"] if kd else e["retrain_ce"]) * _rounds(method, s)
    assert f"Estimate: {total / 3600:.2f} device-hours" in proc.stdout


def test_reproduce_table2_dry_run_without_a_bench_file_says_assumed(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "1", "--dry-run", "--bench", str(tmp_path / "none.json")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ASSUMPTIONS" in proc.stdout and "MEASURED" not in proc.stdout


def test_unknown_recipe_is_one_line_naming_the_choices():
    proc = subprocess.run([sys.executable, "-m", "tgp.bench", "--recipes", "cifar10_resnet81"], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--recipes cifar10_resnet81: no such experiment file" in proc.stderr and "cifar10_resnet18" in proc.stderr


def test_text_recipe_tokens_per_second_and_padding_of_its_data_path(roleswap, tmp_path):
    """The demo's text recipe on the session's roleswap task: every step in tokens per second, their ratios,
    and the padding of the data path against an independent count over one epoch of its loader."""
    from hydra.utils import instantiate

    from conftest import compose_cfg
    from tgp.bench import main

    out = tmp_path / "cpu.json"
    data = f"paths.data_dir={roleswap['root']}"
    main(["--recipes", "demo_text", "--steps", "2", "--warmup", "1", "--repeats", "1", "--device", "cpu",
          "--compile", "eager", "--override", data, "--out", str(out)])
    entry = json.loads(out.read_text())["recipes"]["demo_text"]
    assert (entry["modality"], entry["dataset"], entry["student"], entry["batch"]) == ("text", "roleswap", "bert_tiny", 64)
    f = entry["modes"]["eager"]
    for kind in ("model", "dense", "masked", "kd", "masked_kd", "teacher"):
        assert f[f"{kind}_step_s"] > 0 and f[f"{kind}_padded_tok_s"] >= f[f"{kind}_tok_s"] > 0
        assert math.isclose(f[f"{kind}_tok_s"] / f[f"{kind}_padded_tok_s"], f["dense_tok_s"] / f["dense_padded_tok_s"])
    assert math.isclose(f["masked_over_dense"], f["masked_step_s"] / f["dense_step_s"])
    assert math.isclose(f["masked_kd_over_kd"], f["masked_kd_step_s"] / f["kd_step_s"])
    dm = instantiate(compose_cfg(["experiment=demo_text", data], tmp_path).data)
    dm.setup()
    batches = list(dm.train_dataloader())
    real = sum(int((x != dm.pad_id).sum()) for x, _ in batches)
    assert f["padded_over_real"] == pytest.approx(sum(x.numel() for x, _ in batches) / real)
    assert f["padded_to_max_over_real"] == pytest.approx(sum(len(x) for x, _ in batches) * dm.max_length / real)
    assert 1.0 <= f["padded_over_real"] < f["padded_to_max_over_real"]
    n_batches = entry["n_train"] // 64
    assert math.isclose(f["stage_epoch_s"]["retrain_kd"] - f["stage_epoch_s"]["retrain_ce"],
                        n_batches * (f["masked_kd_step_s"] - f["masked_step_s"]))
