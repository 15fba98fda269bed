"""Text on the pipeline: every method the registry lets run on a text task leaves an exact mask on the tiny
BERT; STS-B (regression, KD by MSE) and MNLI (two evaluation sets) are scored as an independent computation
scores them; methods and teachers that cannot run on the data are refused before any stage, in one
paragraph; the linear schedule and the regression loss against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_cfg, read_json
from tgp.errors import ConfigError
from tgp.pipeline import prepare_job, run_pipeline


def text_smoke(roleswap) -> list[str]:
    """The text demo's recipe at toy size, on the session's generated roleswap task."""
    return ["experiment=demo_text", f"paths.data_dir={roleswap['root']}", "data.val_size=32", "data.batch_size=32",
            "data.eval_batch_size=64", "kd_pretrain.epochs=1", "retrain.epochs=2", "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1", "pruning.score_batches=2", "logger=none"]


def text_methods(roleswap, tmp_path) -> list[str]:
    """The methods the registry lets run on roleswap (MethodSpec.data_check)."""
    from tgp.methods import methods_for

    return methods_for(prepare_job(compose_cfg(text_smoke(roleswap), tmp_path)).dm)


def assert_exact(run_dir, sparsity: float) -> None:
    """round(s·N) prunable weights removed, every one of them exactly zero in the final network, and no other."""
    mask, state = torch.load(run_dir / "mask.pt"), torch.load(run_dir / "student_sparse.pt")
    total = sum(m.numel() for m in mask.values())
    assert sum(int((~m).sum()) for m in mask.values()) == round(sparsity * total)
    for name, m in mask.items():
        assert torch.all(state[name][~m] == 0), name
    assert all(name.startswith("transformer.bert.encoder.layer.") for name in mask)  # the encoder's Linears


def test_every_text_capable_method_prunes_exactly_on_the_tiny_bert(roleswap, tmp_path):
    methods = text_methods(roleswap, tmp_path)
    assert methods == ["ce_grad", "dense", "imp", "magnitude", "random", "sdp", "snip", "tgp"]
    variants = [(m, []) for m in methods] + [("tgp", ["pruning.sanity=layer_shuffle"]), ("magnitude", ["pruning.sanity=reinit"])]
    rows = {}
    for method, extra in variants:
        rate = ["method.rate=0.6"] if method == "imp" else []
        cfg = compose_cfg([*text_smoke(roleswap), f"method={method}", *rate, *extra], tmp_path)
        run = tmp_path / "runs" / "-".join([method, *extra])
        row = rows[run.name] = run_pipeline(cfg, run)
        assert row["dataset"] == "roleswap" and row["score_name"] == "acc" and row["benchmark"] is None
        assert row["top1_last"] is None and row["top1_best_val"] is None  # a text row: scores, not top-1
        assert row["metrics_last"].keys() == {"accuracy"} and row["score_last"] == row["metrics_last"]["accuracy"]
        assert row["groups_last"] is None and 0 <= row["score_best_val"] <= 1 and row["val_acc_best"] is not None
        assert_exact(run, 0.0 if method == "dense" else 0.9)
        assert row["target_sparsity"] == (0.0 if method == "dense" else 0.9)
    # One stage store: the one-shot methods share the teacher and KD pretraining (ce_grad ran them first), SDP
    # the dense stage of the dense method (which ran before it).
    assert rows["tgp"]["stages_skipped"][:2] == ["teacher", "kd_pretrain"] and rows["ce_grad"]["stages_skipped"] == []
    assert rows["sdp"]["stages_skipped"] == ["dense"]
    assert rows["tgp"]["score_teacher"] is not None and rows["sdp"]["variant"] is None


def test_stsb_and_mnli_scores_equal_an_independent_computation(roleswap, tmp_path):
    """The row's metrics of the final network against scipy/numpy on its own predictions: Pearson and
    Spearman for STS-B (trained with TGP, whose KD is MSE to the teacher's score), accuracy per MNLI set
    and their mean for MNLI."""
    from scipy.stats import pearsonr, spearmanr

    from tgp.data.text.fake_files import write_fake_task

    for task in ("stsb", "mnli"):
        write_fake_task(tmp_path / "data", task, n_train=96, n_dev=24)
    for task, method in (("stsb", "tgp"), ("mnli", "sdp")):
        cfg = compose_cfg([*text_smoke(roleswap), "data=glue", f"data.task={task}", f"data.root={tmp_path / 'data'}",
                           f"model.tokenizer={roleswap['tokenizer']}", "data.max_length=32", "data.val_size=16",
                           f"method={method}"], tmp_path)
        row = run_pipeline(cfg, tmp_path / task)
        dm = instantiate(cfg.data)
        dm.setup()
        net = instantiate(cfg.model, **dm.model_kwargs())
        net.load_state_dict(torch.load(tmp_path / task / "student_sparse.pt"))
        net.eval()
        with torch.no_grad():
            per_set = {g: [(net(x), y) for x, y in loader] for g, loader in dm.test_group_dataloaders().items()}
        outs = {g: (torch.cat([o for o, _ in b]).numpy(), torch.cat([y for _, y in b]).numpy()) for g, b in per_set.items()}
        if task == "stsb":
            assert net.fc.out_features == 1 and row["score_name"] == "pearson_spearman"
            z, y = outs[""]
            expected = {"pearson": pearsonr(z.reshape(-1), y)[0], "spearman": spearmanr(z.reshape(-1), y)[0]}
            assert row["groups_last"] is None
            # KD for a regression target: MSE to the teacher's score (no CA-KLD, no confidence β)
            kd = read_json(tmp_path / task / "kd_pretrain" / "result.json")
            assert "teacher_confidence" not in kd
        else:
            assert row["score_name"] == "acc" and set(outs) == {"matched", "mismatched"}
            groups = {g: float(np.mean(z.argmax(1) == y)) for g, (z, y) in outs.items()}
            assert {g: m["accuracy"] for g, m in row["groups_last"].items()} == pytest.approx(groups, abs=1e-6)
            expected = {"accuracy": (groups["matched"] + groups["mismatched"]) / 2}
        assert row["metrics_last"] == pytest.approx(expected, abs=1e-5)
        assert row["score_last"] == pytest.approx(sum(expected.values()) / len(expected), abs=1e-5)
        assert row["benchmark"] == "glue"


def test_methods_and_teachers_that_cannot_read_the_data_are_refused_before_any_stage(roleswap, tmp_path):
    smoke = text_smoke(roleswap)
    for method, needle in (("epsd", r"EPSD's self-distillation regimes .* text data"),
                           ("colt", r"COLT trains one network per half of the classes and needs at least 4 classes \(two per half\); roleswap has 2")):
        with pytest.raises(ConfigError, match=rf"^method='{method}': {needle}.* Fix: use a method that runs on "
                                              r"roleswap: ce_grad, dense, imp, magnitude, random, sdp, snip, tgp\.$"):
            prepare_job(compose_cfg([*smoke, f"method={method}"], tmp_path))
    from tgp.data.text.generated import train_wordpiece

    other = train_wordpiece(["a completely different vocabulary of words"], str(tmp_path / "other_tok"), vocab_size=64)
    with pytest.raises(ConfigError, match=r"^teacher.net.tokenizer=.*other_tok.*not the data's"):
        prepare_job(compose_cfg([*smoke, "method=tgp", f"teacher.net.tokenizer={other}"], tmp_path))
    tok = roleswap["tokenizer"]
    for overrides, message in (
        ([*smoke, "model=resnet20_tiny"], r"^data.tokenizer='\$\{model.tokenizer\}': refers to a setting this config "
                                          r"does not have .*model=bert_tiny"),
        ([*smoke, "model=resnet20_tiny", "~model.config", f"data.tokenizer={tok}"],
         r"^model='resnet20': the roleswap data is token ids"),
        (["experiment=smoke", "model=bert_tiny", f"model.tokenizer={tok}"],
         r"^model='bert_tiny': is a text model, and the digits data is image data"),
        (["experiment=smoke", "teacher=bert_tiny", f"teacher.net.tokenizer={tok}"],
         r"^teacher.net='bert_tiny': is a text model, and the digits data is image data"),
        ([*smoke, "teacher=resnet20_tiny"], r"^teacher.net='resnet20': .*names no tokenizer: it is not a text model"),
    ):
        with pytest.raises(ConfigError, match=message):
            prepare_job(compose_cfg(overrides, tmp_path))
    assert not (tmp_path / "stages").exists() and not (tmp_path / "run").exists()


def test_refusal_on_the_command_line_is_one_paragraph_exit_2(roleswap, cli, tmp_path):
    proc = cli([*text_smoke(roleswap), "method=epsd"], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("tgp: error: method='epsd': EPSD's self-distillation regimes")
    assert not (tmp_path / "run").exists()


def test_linear_schedule_and_regression_loss_by_hand():
    from tgp.distill.losses import DistillationLoss
    from tgp.lit import lr_lambda

    # linear: warm-up (step + 1) / w, then 1 − (step − w) / (total − w), never below 0
    assert [lr_lambda(s, total=10, warmup=2, kind="linear") for s in (0, 1, 2, 6, 10, 12)] == \
        pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0, 0.0])
    z, t, y = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([[0.5], [2.5], [3.0]]), torch.tensor([1.5, 2.0, 5.0])
    mse_y = ((1 - 1.5) ** 2 + 0 + (4 - 5) ** 2) / 3
    mse_t = ((1 - 0.5) ** 2 + (2 - 2.5) ** 2 + (4 - 3) ** 2) / 3
    loss, parts = DistillationLoss(kd_weight=0.3, regression=True)(z, y, t)
    assert float(loss) == pytest.approx(0.3 * mse_t + 0.7 * mse_y) and float(parts["mse"]) == pytest.approx(mse_y)
    assert float(DistillationLoss(kd_weight=0.0, regression=True)(z, y)[0]) == pytest.approx(mse_y)
    assert not DistillationLoss(kd_weight=0.5, regression=True).needs_dataset_confidence
    assert math.isclose(float(parts["kd"]), mse_t, rel_tol=1e-6)
