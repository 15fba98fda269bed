"""Nothing trusted blindly: every file a stage wrote is recorded (size, SHA-256) in its result.json and
verified before reuse; a damaged stage is set aside and computed again (resumed from its checkpoint
when that verifies), with one console line; tgp-verify lists what is damaged; tgp-eval and tgp-report
refuse or flag damaged runs.

Fast tests drive :class:`tgp.stages.StageRunner` with a small deterministic stage that writes the real
file kinds (torch zip archives, CSV, JSON); the end-to-end runs of the smoke pipeline are ``slow``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import compose_cfg, read_json
from tgp.integrity import check_stage, file_record, zip_problem
from tgp.stages import KINDS, StageKind
from tgp.verify import main as verify_main

ARTIFACTS = ("net.pt", "mask.pt", "last.ckpt", "result.json", "metrics.csv")


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the middle: the size stays, the content does not
    path.write_bytes(bytes(data))


DAMAGES = {"truncate": truncate, "flip": flip}


# -- a small stage that writes every kind of artifact ------------------------------------------------
def _kind() -> StageKind:
    return KINDS.get("test_artifacts") or StageKind("test_artifacts", reads=("model",))


def toy_stage(job, log: list):
    """A stage function writing net.pt, mask.pt, last.ckpt (recorded in attempts.json, as
    tgp.training.EpochEndCheckpoint does), logs/ and metrics.csv, all a function of the model width;
    ``log`` receives whether it found a last.ckpt to resume from."""

    def run(folder: Path, cfg) -> dict:
        from tgp.io import atomic_save_json, atomic_torch_save, atomic_write_bytes

        width = int(cfg.model.width)
        g = torch.Generator().manual_seed(width)
        weights = {"w": torch.randn(64, 32, generator=g), "b": torch.randn(64, generator=g)}
        log.append((folder / "last.ckpt").exists())
        if not (folder / "last.ckpt").exists():
            atomic_torch_save({"state_dict": weights, "epoch": 0}, folder / "last.ckpt")
            job.stages.attempt.tick(last_ckpt=file_record(folder / "last.ckpt"))
        state = torch.load(folder / "last.ckpt", weights_only=False)["state_dict"]
        atomic_torch_save(state, folder / "net.pt")
        atomic_torch_save({"w": state["w"] > 0}, folder / "mask.pt")
        atomic_write_bytes(folder / "logs" / "attempt_1" / "metrics.csv", lambda f: f.write(b"epoch,loss\n0,1.5\n"))
        atomic_write_bytes(folder / "metrics.csv", lambda f: f.write(b"epoch,loss\n0,1.5\n"))
        atomic_save_json({"kept": int((state["w"] > 0).sum())}, folder / "report.json")
        return {"epochs": 1, "width": width}

    return run


@pytest.fixture
def store(tmp_path):
    """A finished toy stage in a stage store (and a pristine copy of its files)."""
    from tgp.job import Job

    cfg = compose_cfg(["experiment=smoke"], tmp_path)
    calls: list = []
    job = Job(cfg, tmp_path / "run", dm=None)
    job.run(_kind(), toy_stage(job, calls))
    folder = Path(os.path.realpath(tmp_path / "run" / "test_artifacts"))
    pristine = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    return {"cfg": cfg, "folder": folder, "pristine": pristine, "calls": calls, "tmp": tmp_path}


def rerun(store) -> tuple[dict, list]:
    from tgp.job import Job

    calls: list = []
    job = Job(store["cfg"], store["tmp"] / "run", dm=None)
    return job.run(_kind(), toy_stage(job, calls)), calls


def test_result_records_the_size_and_hash_of_every_file_the_stage_wrote(store):
    folder = store["folder"]
    files = read_json(folder / "result.json")["files"]
    expected = {}
    for path in sorted(folder.rglob("*")):  # computed here with hashlib, independently of tgp.integrity
        name = path.relative_to(folder).as_posix()
        if path.is_file() and name not in ("result.json", "attempts.json"):
            data = path.read_bytes()
            expected[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert files == expected
    assert set(files) == {"net.pt", "mask.pt", "last.ckpt", "metrics.csv", "report.json", "logs/attempt_1/metrics.csv"}
    assert check_stage(folder).status == "ok"


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_a_damaged_artifact_is_found_set_aside_and_recomputed_to_the_same_bytes(store, artifact, damage, caplog, capsys):
    folder = store["folder"]
    DAMAGES[damage](folder / artifact)

    # A flipped bit in result.json may leave valid JSON whose record of some file no longer matches it:
    # then that file is named (and the stage is damaged all the same).
    named = "" if (artifact, damage) == ("result.json", "flip") else f"{artifact}: "
    assert verify_main([str(store["tmp"] / "stages")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"damaged: {folder}: {named}") and out[-1].startswith("tgp-verify: 1 damaged"), out

    with caplog.at_level(logging.INFO, logger="tgp"):
        result, calls = rerun(store)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"stage test_artifacts: damaged: {named}"), warnings
    aside = [p for p in folder.parent.iterdir() if p.name.startswith(f"{folder.name}.damaged-")]
    assert len(aside) == 1 and aside[0].name in warnings[0]
    # the checkpoint is resumed from when it (and what a resume needs) verifies; else the stage starts afresh
    resumed = calls == [True]
    assert resumed == (artifact != "last.ckpt") or not named
    assert warnings[0].endswith("resuming from its verified last.ckpt" if resumed else "computing it again")
    for name, data in store["pristine"].items():
        if name != "attempts.json" and name != "result.json":
            assert (folder / name).read_bytes() == data, name
    fresh = read_json(folder / "result.json")
    assert fresh["files"] == json.loads(store["pristine"]["result.json"])["files"] and result["width"] == fresh["width"]
    assert verify_main([str(store["tmp"] / "stages")]) == 0
    assert "1 folder set aside earlier" in capsys.readouterr().out


def test_an_intact_stage_is_reused_without_a_warning(store, caplog):
    with caplog.at_level(logging.INFO, logger="tgp"):
        _, calls = rerun(store)
    assert calls == [] and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("stage test_artifacts: reused" in r.getMessage() for r in caplog.records)


def _unfinished(store) -> Path:
    """The store's stage as if killed after writing last.ckpt: no result.json, no outputs."""
    folder = store["folder"]
    for name in ("result.json", "net.pt", "mask.pt", "metrics.csv", "report.json"):
        (folder / name).unlink()
    return folder


def test_an_unfinished_stage_resumes_from_its_recorded_checkpoint(store, caplog):
    _unfinished(store)
    with caplog.at_level(logging.INFO, logger="tgp"):
        _, calls = rerun(store)
    assert calls == [True] and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert (store["folder"] / "net.pt").read_bytes() == store["pristine"]["net.pt"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_an_unfinished_stage_whose_checkpoint_is_damaged_starts_afresh(store, damage, caplog):
    folder = _unfinished(store)
    DAMAGES[damage](folder / "last.ckpt")
    assert check_stage(folder).damaged
    with caplog.at_level(logging.INFO, logger="tgp"):
        _, calls = rerun(store)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "last.ckpt" in warnings[0] and warnings[0].endswith("starting it afresh"), warnings
    assert calls == [False] and (folder / "net.pt").read_bytes() == store["pristine"]["net.pt"]


def test_a_checkpoint_without_a_record_is_trusted_only_when_its_crcs_pass(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"w": torch.arange(1000.0)}, path)
    assert zip_problem(path) is None
    flip(path)  # torch.load would still read this file: the CRC-32 of the archive member catches it
    assert "CRC" in zip_problem(path)
    truncate(path)
    assert "not a complete checkpoint archive" in zip_problem(path)


def test_a_result_without_checksums_from_an_older_tgp_is_recomputed_not_trusted(store, caplog):
    folder = store["folder"]
    result = read_json(folder / "result.json")
    del result["files"]
    (folder / "result.json").write_text(json.dumps(result))
    with caplog.at_level(logging.INFO, logger="tgp"):
        _, calls = rerun(store)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "records no checksums" in warnings[0] and warnings[0].endswith("computing it again")
    assert calls == [False]  # its checkpoint is not resumed from either


def test_a_damaged_attempt_log_is_started_anew(store):
    _unfinished(store)
    (store["folder"] / "attempts.json").write_text("[{\"star")  # truncated; it records time, never results
    _, calls = rerun(store)  # no record of last.ckpt left: its archive's CRCs decide, and it is intact
    assert calls == [True] and read_json(store["folder"] / "attempts.json")[-1]["status"] == "done"


def test_verify_exit_codes_and_summary(store, tmp_path, capsys):
    assert verify_main([str(store["tmp"] / "stages"), str(store["tmp"] / "run")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tgp-verify: nothing damaged: checked 1 stage folder (1 ok, 0 unfinished, 0 damaged), 0 runs")
    assert verify_main([str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


# -- tgp-eval and tgp-report on a damaged run --------------------------------------------------------
@pytest.fixture
def run_dir(tmp_path):
    """A run directory as tgp-run leaves it (config, student_sparse.pt recorded in metrics.json, a prune
    stage in the store), made without training."""
    from tgp.integrity import record_files, student_record
    from tgp.pruning.mask import save_mask
    from tgp.report.jobs import _job_settings

    cfg = compose_cfg(["experiment=smoke"], tmp_path)
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    net = instantiate(cfg.model, num_classes=10, in_channels=3)
    run = tmp_path / "runs" / "r"
    prune = tmp_path / "stages" / "prune-abc"
    prune.mkdir(parents=True)
    run.mkdir(parents=True)
    (run / "prune").symlink_to(os.path.relpath(prune, run), target_is_directory=True)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    mask = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters() if p.dim() > 1}
    save_mask(mask, prune / "mask.pt")
    (prune / "result.json").write_text(json.dumps({"kind": "prune", "files": record_files(prune)}))
    torch.save(net.state_dict(), run / "student_sparse.pt")
    (run / ".hydra").mkdir()
    shutil.copy(run / "config.yaml", run / ".hydra" / "config.yaml")
    row = {**_job_settings(run), "top1_last": 0.5, "top1_best_val": 0.5, "status": "ok",
           **student_record(run / "student_sparse.pt")}
    (run / "metrics.json").write_text(json.dumps(row))
    return run


@pytest.mark.parametrize("artifact, damage", [("prune/mask.pt", "truncate"), ("student_sparse.pt", "flip")])
def test_eval_of_a_damaged_run_is_one_paragraph_naming_the_file_and_exit_2(run_dir, artifact, damage, capsys):
    from tgp.eval import main as eval_main

    DAMAGES[damage](run_dir / artifact)
    with pytest.raises(SystemExit) as exit_:
        eval_main([str(run_dir), "--no-timing"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and not out
    assert err.startswith(f"tgp-eval: error: {run_dir / artifact} is damaged: "), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_report_lists_a_damaged_job_as_damaged_not_done(run_dir, capsys):
    from tgp.report.jobs import find_jobs
    from tgp.report.cli import main as report_main

    shutil.copytree(run_dir, run_dir.with_name("r2"), symlinks=True)  # a second job sharing the prune stage
    flip(run_dir / "student_sparse.pt")
    jobs = find_jobs(run_dir.parent)
    assert [Path(r["run_dir"]).name for r in jobs.ok] == ["r2"]
    assert [Path(r["run_dir"]).name for r in jobs.damaged] == ["r"]
    assert jobs.damaged[0]["error"].startswith(f"{run_dir / 'student_sparse.pt'}: content differs from its record")
    assert report_main([str(run_dir.parent), "--references", "none", "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "1 done, 0 failed, 0 incomplete, 0 missing, 1 damaged" in out and "  damaged: tgp " in out, out
    assert "## Damaged jobs" in (run_dir.parent / "report.md").read_text()
    flip(run_dir / "prune" / "mask.pt")  # a stage both jobs share: both are damaged, nothing is left to report
    jobs = find_jobs(run_dir.parent)
    assert not jobs.ok and len(jobs.damaged) == 2
    assert report_main([str(run_dir.parent), "--references", "none", "--no-plots"]) == 2


def test_verify_and_a_sweeps_skip_check_the_runs_own_files(run_dir, capsys):
    from tgp.integrity import run_file_record
    from tgp.run import _finished_row

    shutil.copy(run_dir / "prune" / "mask.pt", run_dir / "mask.pt")  # the run's final mask, recorded as tgp-run does
    row = read_json(run_dir / "metrics.json") | run_file_record(run_dir / "mask.pt")
    (run_dir / "metrics.json").write_text(json.dumps(row))
    assert verify_main([str(run_dir)]) == 0 and _finished_row(run_dir) == row
    capsys.readouterr()
    truncate(run_dir / "mask.pt")
    assert verify_main([str(run_dir)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"damaged: {run_dir}: mask.pt: ") and "(truncated)" in out[0], out
    assert _finished_row(run_dir) is None  # a re-run sweep runs the job again instead of skipping it as done
    (run_dir / "mask.pt").unlink()  # a recorded file that is gone is damage too
    assert verify_main([str(run_dir)]) == 1
    assert capsys.readouterr().out.startswith(f"damaged: {run_dir}: mask.pt: missing")


# -- (slow) the smoke pipeline on a damaged store ends bit-identical to an undamaged run ------------------
STAGES = ("teacher", "kd_pretrain", "prune", "retrain")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A finished smoke run and its store (the folder a damage test damages and re-runs in place)."""
    from conftest import run_cli

    tmp = tmp_path_factory.mktemp("smoke") / "w"
    tmp.mkdir()
    run_cli(["experiment=smoke", f"paths.stage_store={tmp / 'stages'}"], tmp, timeout=900)
    return tmp


@pytest.fixture
def pristine(smoke):
    """``(work, pristine)``: the smoke folder to damage and re-run — in place, since checkpoints record the
    folder they were written to — and an untouched copy of it; the smoke folder is restored afterwards."""
    copy = smoke.with_name("pristine")
    shutil.copytree(smoke, copy, symlinks=True)  # stage links are relative: they point into the copy
    yield smoke, copy
    shutil.rmtree(smoke)
    copy.rename(smoke)


def _same_artifacts(a: Path, b: Path) -> None:
    """The files a job's result rests on are byte for byte those of the undamaged run (``a`` re-ran in
    the folder where ``b`` was computed: checkpoints record their folder)."""
    for stage in STAGES:
        files = read_json(a / "run" / stage / "result.json")["files"]
        for name in files:
            if not name.startswith("logs/"):  # a resumed stage adds an attempt's logs; metrics.csv is their merge
                assert (a / "run" / stage / name).read_bytes() == (b / "run" / stage / name).read_bytes(), (stage, name)
    assert (a / "run" / "student_sparse.pt").read_bytes() == (b / "run" / "student_sparse.pt").read_bytes()
    ra, rb = read_json(a / "run" / "metrics.json"), read_json(b / "run" / "metrics.json")
    for key in ("top1_last", "top1_best_val", "top1_pruned", "measured_sparsity", "student_sparse_sha256"):
        assert ra.get(key) == rb.get(key), key


@pytest.mark.slow  # a damaged copy of a smoke store, re-run (~1 min on 2 cores, with the shared pristine run)
def test_every_damaged_stage_of_a_smoke_store_is_recomputed_and_the_run_ends_bit_identical(pristine, capsys):
    from conftest import run_cli

    work, pristine = pristine
    run = work / "run"
    truncate(run / "teacher" / "result.json")  # → resumed from last.ckpt (its record in attempts.json)
    flip(run / "kd_pretrain" / "last.ckpt")  # a finished stage's checkpoint → computed again from the start
    flip(run / "prune" / "mask.pt")  # → computed again
    truncate(run / "retrain" / "metrics.csv")  # → resumed from its verified last.ckpt, metrics.csv merged again
    assert verify_main([str(work / "stages")]) == 1
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 5 and [line.split(": ")[2] for line in listed[:4]] == \
        ["last.ckpt", "mask.pt", "metrics.csv", "result.json"]  # kd_pretrain, prune, retrain, teacher

    proc = run_cli(["experiment=smoke", f"paths.stage_store={work / 'stages'}"], work, timeout=900)
    console = proc.stdout + proc.stderr
    lines = [line for line in console.splitlines() if "damaged: " in line]
    assert len(lines) == 4 and "Traceback" not in console, console[-3000:]
    for stage, then in zip(STAGES, ("resuming from its verified last.ckpt", "computing it again",
                                    "computing it again", "resuming from its verified last.ckpt")):
        assert any(f"stage {stage}: damaged: " in line and line.endswith(then) for line in lines), (stage, lines)
    _same_artifacts(work, pristine)
    assert verify_main([str(work / "stages"), str(run)]) == 0
    assert "4 folders set aside earlier" in capsys.readouterr().out


@pytest.mark.slow  # (~1 min on 2 cores)
def test_a_truncated_kd_student_is_resumed_for_another_sparsity_and_an_unfinished_stage_with_a_bad_checkpoint_restarts(
        pristine):
    from conftest import run_cli

    work, pristine = pristine
    os.truncate(work / "run" / "kd_pretrain" / "net.pt", 500)
    retrain = (work / "run" / "retrain").resolve()
    (retrain / "result.json").unlink()  # as if killed after its last epoch's checkpoint...
    flip(retrain / "last.ckpt")  # ... which the disk then damaged
    proc = run_cli(["experiment=smoke", f"paths.stage_store={work / 'stages'}"], work, timeout=900)
    out = proc.stdout + proc.stderr
    assert "stage kd_pretrain: damaged: net.pt: 500 bytes, recorded " in out and "Traceback" not in out
    assert "stage retrain: damaged: last.ckpt: matches none of its records in attempts.json" in out
    assert out.count("damaged: ") == 2 and "starting it afresh" in out, out[-3000:]
    _same_artifacts(work, pristine)
    # another sparsity on the same store: the KD student is now intact and reused
    other = run_cli(["experiment=smoke", "pruning.sparsity=0.8", f"paths.stage_store={work / 'stages'}",
                     f"hydra.run.dir={work / 'run08'}"], work, timeout=900)
    assert "stage kd_pretrain: reused" in other.stdout + other.stderr and "damaged: " not in other.stdout + other.stderr
