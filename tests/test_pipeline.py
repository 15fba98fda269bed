"""The TGP pipeline end to end through the real CLI (Hydra, Lightning, files on disk)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, read_json, run_cli
from tgp.pruning.mask import prunable_parameters


def test_smoke_run_writes_exact_sparsity_and_matching_artifacts(cli, tmp_path):
    proc = cli(["experiment=smoke", "pruning.sparsity=0.9"])
    run = tmp_path / "run"
    row = read_json(run / "metrics.json")
    report = read_json(run / "prune" / "sparsity_report.json")
    n = report["prunable"]["total"]
    assert row["measured_sparsity"] == round(0.9 * n) / n == report["prunable"]["sparsity"]
    assert row["target_sparsity"] == 0.9 and row["method"] == "tgp" and row["dataset"] == "digits"
    assert row["flops_nonzero"] < row["flops_dense"] and row["params_nonzero"] < row["params_total"]
    for key in ("top1_teacher", "top1_dense_student", "top1_pruned", "top1_last", "top1_best_val"):
        assert 0.0 <= row[key] <= 1.0
    mask = torch.load(run / "prune" / "mask.pt")
    state = torch.load(run / "student_sparse.pt")
    for name, m in mask.items():
        assert torch.all(state[name][~m] == 0), name  # zeros exactly where the mask says
        assert torch.all(state[name][m] != 0), name   # and only there
    # The final mask beside the final network, both named in the row.
    assert (row["net_stage"], row["mask_stage"]) == ("retrain", "prune")
    final = torch.load(run / "mask.pt")
    assert list(final) == list(mask) and all(torch.equal(final[n], mask[n]) for n in mask)
    assert "dense teacher" in proc.stdout and "retrained (KD)" in proc.stdout
    assert (run / "config.yaml").exists() and (run / "retrain" / "last.ckpt").exists()
    assert {p.name for p in (run / ".hydra").iterdir()} == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    # tgp-eval of a run folder written before <run_dir>/mask.pt: the mask is read from prune/mask.pt.
    from tgp import eval as tgp_eval

    (run / "mask.pt").unlink()
    assert tgp_eval.main([str(run), "--no-timing", "--out", str(tmp_path / "eval.json")]) == 0
    evaluated = read_json(tmp_path / "eval.json")
    assert evaluated["mask"] == str(run / "prune" / "mask.pt") and evaluated["sparsity_over"] == "mask"
    assert evaluated["measured_sparsity"] == row["measured_sparsity"] and evaluated["top1"] == row["top1_last"]
    # The frozen teacher's accuracy is logged once per KD fit.
    header, *rows = (run / "kd_pretrain" / "metrics.csv").read_text().splitlines()
    col = header.split(",").index("kd_pretrain/val/teacher_acc")
    assert sum(1 for r in rows if r.split(",")[col]) == 1


def test_stop_after_prune_then_rerun_skips_finished_stages(cli, tmp_path):
    cli(["experiment=smoke", "stop_after=prune"])
    run = tmp_path / "run"
    assert (run / "prune" / "mask.pt").exists() and not (run / "metrics.json").exists()
    digest = (run / "prune" / "mask.pt").read_bytes()
    cli(["experiment=smoke"])
    row = read_json(run / "metrics.json")
    assert row["stages_skipped"] == ["teacher", "kd_pretrain", "prune"]
    assert (run / "prune" / "mask.pt").read_bytes() == digest


def test_same_command_finds_the_same_run_dir_and_stages_are_shared(tmp_path):
    # No hydra.run.dir: the folder name comes from the config.
    base = [sys.executable, "-m", "tgp.run", "experiment=smoke", f"paths.log_dir={tmp_path}"]
    for kd in ("true", "false"):
        subprocess.run([*base, f"retrain.kd={kd}"], cwd=ROOT, check=True, capture_output=True, timeout=300)
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and sum("-ce-" in r.name for r in runs) == 1
    rows = [read_json(r / "metrics.json") for r in runs]
    # retrain.kd=false reused the first run's teacher, KD-pretraining and mask.
    assert sorted(len(r["stages_skipped"]) for r in rows) == [0, 3]
    assert (runs[0] / "prune").resolve() == (runs[1] / "prune").resolve()


def test_kill_during_retrain_then_resume_keeps_masks(tmp_path):
    args = ["experiment=smoke", "retrain.epochs=40", "trainer.limit_val_batches=1"]
    cmd = [sys.executable, "-m", "tgp.run", *args, f"paths.log_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last = tmp_path / "run" / "retrain" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last.exists() and not (tmp_path / "run" / "metrics.json").exists(), "killed too late to test a resume"
    ckpt = torch.load(last, weights_only=False)
    killed_epoch = ckpt["epoch"]
    mask = torch.load(tmp_path / "run" / "prune" / "mask.pt")
    buffers = {k[len("mask_buffers."):].replace("__", "."): v for k, v in ckpt["state_dict"].items()
               if k.startswith("mask_buffers.")}
    assert buffers.keys() == mask.keys() and all(torch.equal(buffers[k], mask[k]) for k in mask)
    done = run_cli(args, tmp_path)
    assert "resuming from" in done.stdout + done.stderr
    row = read_json(tmp_path / "run" / "metrics.json")
    assert row["measured_sparsity"] == pytest.approx(read_json(tmp_path / "run" / "prune" / "sparsity_report.json")["prunable"]["sparsity"], abs=0)
    assert torch.load(last, weights_only=False)["epoch"] > killed_epoch
    state = torch.load(tmp_path / "run" / "student_sparse.pt")
    assert all(torch.all(state[n][~m] == 0) for n, m in mask.items())


# -- bad input: one paragraph, exit code 2, nothing written lost -----------------------------------
def assert_clean_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("value", ["1.5", "1.0", "-0.2"])
def test_sparsity_out_of_range(cli, value):
    assert_clean_error(cli(["experiment=smoke", f"pruning.sparsity={value}"], check=False), "pruning.sparsity", value)


def test_exclude_matching_nothing_keeps_earlier_stages(cli, tmp_path):
    cli(["experiment=smoke", "stop_after=kd_pretrain"])
    result = (tmp_path / "run" / "kd_pretrain" / "result.json").read_bytes()
    proc = cli(["experiment=smoke", "pruning.exclude=[no_such_layer]"], check=False)
    assert_clean_error(proc, "pruning.exclude", "no_such_layer")
    assert (tmp_path / "run" / "kd_pretrain" / "result.json").read_bytes() == result
    assert not list(tmp_path.glob("**/mask.pt"))


def test_teacher_checkpoint_with_other_class_count(cli, tmp_path):
    from tgp.models import build_model

    torch.save(build_model("resnet20", num_classes=7, in_channels=1, width=8).state_dict(), tmp_path / "t.pt")
    proc = cli(["experiment=smoke", f"teacher.checkpoint={tmp_path}/t.pt"], check=False)
    assert_clean_error(proc, "teacher.checkpoint", "7 classes", "10")


def test_teacher_checkpoint_with_other_architecture(cli, tmp_path):
    from tgp.models import build_model

    torch.save(build_model("resnet18", num_classes=10, in_channels=1, width=8).state_dict(), tmp_path / "t.pt")
    assert_clean_error(cli(["experiment=smoke", f"teacher.checkpoint={tmp_path}/t.pt"], check=False),
                       "teacher.checkpoint", "does not fit")


def test_teacher_checkpoint_is_loaded_instead_of_trained(cli, tmp_path):
    from tgp.models import build_model

    torch.save(build_model("resnet20", num_classes=10, in_channels=1, width=8).state_dict(), tmp_path / "t.pt")
    cli(["experiment=smoke", f"teacher.checkpoint={tmp_path}/t.pt", "stop_after=teacher"])
    result = read_json(tmp_path / "run" / "teacher" / "result.json")
    assert result["epochs"] == 0 and result["loaded_from"].endswith("t.pt")


def test_mask_file_that_does_not_fit(cli, tmp_path):
    from tgp.models import build_model
    from tgp.pruning import global_threshold, magnitude_scores, save_mask

    other = build_model("resnet20", num_classes=10, in_channels=1, width=16)
    save_mask(global_threshold(magnitude_scores(other, prunable_parameters(other)), 0.5), tmp_path / "other.pt")
    assert_clean_error(cli(["experiment=smoke", f"pruning.mask={tmp_path}/other.pt"], check=False), "other.pt", "shape")


def test_missing_data_error(cli, tmp_path):
    proc = cli(["experiment=smoke", "data=cifar10", f"data.root={tmp_path}/nowhere"], check=False)
    assert_clean_error(proc, "nowhere", "download")


def test_teacher_stage_fast_dev_run(cli, tmp_path):
    cli(["experiment=smoke", "trainer.fast_dev_run=true", "stop_after=teacher"])
    assert (tmp_path / "run" / "teacher" / "result.json").exists()


# -- DDP ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ddp_sim_two_ranks_hold_identical_masks(cli, tmp_path):
    cli(["experiment=smoke", "trainer=ddp_sim", "pruning.sparsity=0.8"], timeout=900)
    report = read_json(tmp_path / "run" / "prune" / "sparsity_report.json")
    assert report["world_size"] == 2 and len(set(report["mask_digests"])) == 1
    n = report["prunable"]["total"]
    assert read_json(tmp_path / "run" / "metrics.json")["measured_sparsity"] == round(0.8 * n) / n
