"""The text recipes (GLUE with BERT-base, XGLUE with XLM-R base, their tiny smoke twins), the text sweep
files and experiments/reproduce_sdp_glue.py's plan: the recipes compose with the settings they state,
the smoke twins read the tiny files of every task's format with their tokenizer, the sweep files expand
(through Hydra's own sweeper) to the jobs expected, and the script's grid is exactly what its multiruns
expand to."""

from __future__ import annotations

import importlib.util
import itertools
import json

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import CONF, ROOT, compose_cfg

GLUE = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")
XGLUE = ("xnli", "pawsx")


def _script():
    spec = importlib.util.spec_from_file_location("reproduce_sdp_glue", ROOT / "experiments" / "reproduce_sdp_glue.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expand(overrides: list[str], params: dict | None = None) -> list[dict]:
    """The jobs Hydra's basic sweeper makes of a multirun's ``overrides`` (and a sweep file's ``params``,
    which the command line's overrides replace key by key, as the sweeper does)."""
    given = {o.split("=", 1)[0] for o in overrides}
    args = [f"{k}={v}" for k, v in (params or {}).items() if k not in given] + list(overrides)
    (batch,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
    return [dict(o.split("=", 1) for o in job) for job in batch]


def sweeper_params(overrides: list[str]) -> dict:
    from tgp.naming import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    return dict(cfg.hydra.sweeper.params)


@pytest.mark.parametrize("experiment, data, model, task", [("glue_bert_base", "glue", "bert_base", "sst2"),
                                                          ("xglue_xlmr_base", "xglue", "xlmr_base", "xnli")])
def test_text_recipes_state_the_fine_tuning_settings(experiment, data, model, task, tmp_path):
    cfg = compose_cfg([f"experiment={experiment}"], tmp_path)
    assert cfg.model.name == model and cfg.data.task == task
    assert cfg.data._target_ == "tgp.data.TextClassificationDataModule"
    assert (cfg.optimizer.name, cfg.optimizer.weight_decay) == ("adamw", 0.01)
    assert cfg.data.batch_size == 32 and cfg.data.max_length == 128
    assert cfg.kd_pretrain.epochs == 3 and cfg.kd_pretrain.lr == 2e-5 and cfg.teacher.epochs == 3
    assert cfg.retrain.epochs == 3 and cfg.retrain.lr == 2e-5
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "gpu"
    assert (cfg.schedule.kind, cfg.schedule.warmup_epochs) == ("linear", 0.3)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    # the teacher is the student's architecture; the data reads the model's own tokenizer
    assert resolved["teacher"]["net"] == resolved["model"]
    assert resolved["data"]["tokenizer"] == resolved["model"]["pretrained"]
    # every setting (the groups chosen, each nested value) is marked paper's or ours
    for line in (CONF / "experiment" / f"{experiment}.yaml").read_text().splitlines():
        if line.startswith("  ") and ":" in line and not line.rstrip().endswith(":"):
            assert "# paper" in line or "# ours" in line or "TGP's loss" in line, line


@pytest.mark.parametrize("experiment, task, groups", [("glue_smoke", "mnli", {"matched", "mismatched"}),
                                                      ("xglue_smoke", "pawsx", {"en", "de", "es", "fr"})])
def test_smoke_twins_read_every_format_with_their_tokenizer(experiment, task, groups, tmp_path):
    """The smoke recipes on the data reproduce_sdp_glue --smoke 1 writes: the datamodule reads the task's
    files with the generated tokenizer, and the tiny model fits that tokenizer and classifies a batch."""
    from tgp.models.text import check_data_fits

    _script().write_smoke_data(tmp_path / "data")
    cfg = compose_cfg([f"experiment={experiment}", f"data.task={task}", f"paths.data_dir={tmp_path / 'data'}"], tmp_path)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    model = instantiate(cfg.model, num_classes=dm.num_classes)
    check_data_fits(model, dm)
    ids, labels = next(iter(dm.train_dataloader()))
    assert model(ids).shape == (len(labels), dm.num_classes)
    dm.setup("test")
    assert set(dm.test_groups) == groups


def test_text_sweep_files_expand_to_the_expected_jobs():
    params = sweeper_params(["experiment=glue_smoke", "sweep=[glue_tasks,text_sparsity]"])
    jobs = expand(["method=sdp,magnitude", "seed=0,1"], params)
    assert len(jobs) == 8 * 3 * 2 * 2
    assert {(j["data.task"], float(j["pruning.sparsity"]), j["method"], int(j["seed"])) for j in jobs} == set(
        itertools.product(GLUE, (0.5, 0.7, 0.9), ("sdp", "magnitude"), (0, 1)))
    assert sweeper_params(["sweep=xglue_tasks"]) == {"data.task": "xnli,pawsx"}
    # a command-line value replaces the sweep file's
    assert {j["pruning.sparsity"] for j in expand(["pruning.sparsity=0.8"], params)} == {"0.8"}


def test_reproduce_sdp_glue_grid_is_what_its_multiruns_expand_to(tmp_path):
    m = _script()
    grid = m.build_grid(["glue", "xglue"], list(m.METHODS), [0.5, 0.7, 0.9], [0, 1, 2], smoke=False)
    got = {(j["task"], j["method"], j["model"], j["retrain_kd"], j["sparsity"], j["seed"]) for e in grid for j in e["jobs"]}
    assert sum(len(e["jobs"]) for e in grid) == len(got) == 708
    expected = set()
    for tasks, base, dense in ((GLUE, "bert_base", ("bert_small", "distilbert", "bert_base")), (XGLUE, "xlmr_base", ("xlmr_base",))):
        for method in ("sdp", "sdp_lambda0", "magnitude", "imp", "ce_grad", "tgp"):
            kds = (True, False) if method == "tgp" else (False,)
            expected |= set(itertools.product(tasks, [method], [base], kds, (0.5, 0.7, 0.9), (0, 1, 2)))
        expected |= set(itertools.product(tasks, ["dense"], dense, [False], [0.0], (0, 1, 2)))
    assert got == expected
    names = {"sdp_lambda0": ("sdp", "0"), "dense": ("dense", None)}
    for e in grid:
        expanded = expand(e["overrides"])
        assert len(expanded) == len(e["jobs"])
        for job in expanded:  # the experiment, and the method as Hydra will select it
            assert job["experiment"] == {"glue": "glue_bert_base", "xglue": "xglue_xlmr_base"}[e["benchmark"]]
        seen = {(j["data.task"], j.get("method") or j.get("method.name"), j.get("model", None), j["retrain.kd"].lower(),
                 float(j["pruning.sparsity"]), int(j["seed"])) for j in expanded}
        want = {(j["task"], names.get(j["method"], (j["method"],))[0], j["model"] if j["method"] == "dense" else None,
                 str(j["retrain_kd"]).lower(), j["sparsity"], j["seed"]) for j in e["jobs"]}
        assert seen == want, e["tag"]
        if e["tag"] == "sdp_lambda0":
            assert all(j["method.cc_weight"] == "0" for j in expanded)
    # every multirun's first job composes (a method without a config file yet is selected by name)
    for e in grid:
        first = {k: v.split(",")[0] for k, v in (o.split("=", 1) for o in e["overrides"])}
        cfg = compose_cfg([f"{k}={v}" for k, v in first.items()], tmp_path)
        assert cfg.data.task in GLUE + XGLUE


def test_reproduce_sdp_glue_dry_run_prints_the_grid_and_an_estimate(capsys, tmp_path):
    m = _script()
    assert m.main(["--dry-run", "--bench", str(tmp_path / "none.json")]) == 0
    out = capsys.readouterr().out
    assert "708 jobs in 8 sweeps" in out and "GPU-hours" in out and "ASSUMPTIONS" in out
    assert "tgp (CE), tgp (KD)" in out and "bert_base, bert_small, distilbert" in out
    assert "reproduce_sdp_glue/report.md" in out
    assert m.main(["--dry-run", "--smoke", "1"]) == 0
    out = capsys.readouterr().out
    assert "80 jobs in 8 sweeps" in out and "CPU-hours (smoke)" in out and "reproduce_sdp_glue_smoke" in out
    # with a bench file that measured the GLUE recipe: its seconds per example, scaled to each task and model
    bench = {"device": "NVIDIA H100", "recipes": {"glue_bert_base": {
        "n_train": 60_000, "modes": {"eager": {"stage_epoch_s": {"teacher": 60.0, "kd_pretrain": 90.0, "dense": 60.0,
                                                                 "retrain_kd": 95.0, "retrain_ce": 63.0}}}}}}
    s, src = m.seconds_per_epoch("mnli", "bert_base", "kd_pretrain", "glue_bert_base", bench)
    assert src == "measured" and s == pytest.approx(90.0 / 60_000 * 392_702)
    s, _ = m.seconds_per_epoch("rte", "bert_small", "dense", "glue_bert_base", bench)
    assert s == pytest.approx(60.0 / 60_000 * 2_490 * m.TRAIN_EX_S["bert_base"] / m.TRAIN_EX_S["bert_small"])
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))
    assert m.main(["--dry-run", "--benchmarks", "glue", "--bench", str(path)]) == 0
    out = capsys.readouterr().out
    assert "MEASURED there" in out and "ASSUMPTIONS" not in out
    cut = m.build_grid(["glue", "xglue"], ["sdp", "dense"], [0.5], [0], smoke=True, tasks={"cola", "xnli"})
    assert {(j["task"], j["model"]) for e in cut for j in e["jobs"]} == {("cola", "bert_tiny"), ("xnli", "xlmr_tiny")}
    assert len(cut) == 4 and all("data.task=cola" in e["overrides"] or "data.task=xnli" in e["overrides"] for e in cut)
    with pytest.raises(SystemExit):
        m.main(["--dry-run", "--methods", "sdp,snip"])
    assert "--methods snip: not known here" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not (CONF / "method" / "dense.yaml").exists(),
                    reason="the text pipeline (method=dense, text metrics rows) is not in this checkout")
def test_reproduce_sdp_glue_smoke_end_to_end(tmp_path):
    """The smoke grid through the real script, cut to three GLUE tasks (two metrics, MNLI's two sets) and
    XNLI, SDP with and without its cross-correlation term and the dense model: every job finishes and the
    report has the mean over the 3 GLUE tasks (not called the GLUE score) and XNLI's 15 languages."""
    import csv
    import os
    import subprocess
    import sys

    out = tmp_path / "logs" / "reproduce_sdp_glue_smoke"
    cmd = [sys.executable, "experiments/reproduce_sdp_glue.py", "--smoke", "1", "--tasks", "cola,mrpc,mnli,xnli",
           "--methods", "sdp,sdp_lambda0,dense", "--log-dir", str(tmp_path / "logs"),
           f"paths.stage_store={tmp_path / 'stages'}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}, [(r["method"], r.get("error")) for r in rows]
    md = (out / "report.md").read_text()
    assert "## Mean score over 3 of 8 GLUE tasks (not the GLUE score)" in md and "| GLUE score" not in md
    assert "sdp (λ=0)" in md and "dense bert_tiny (" in md and "dense xlmr_tiny (" in md
    xnli = md.split("### xnli (15 languages)", 1)[1].split("\n\n", 2)[1]
    assert xnli.count("| sdp | no | xlmr_tiny |") == 16  # 15 languages and the average
    assert (out / "score_vs_params_glue.png").stat().st_size > 5000
