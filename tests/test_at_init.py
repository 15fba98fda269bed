"""SNIP and EPSD (pruning at initialization; docs/methods.md, baselines): pipelines, SD losses, samplers, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import compose_cfg
from torch import nn

from tgp.distill.self_distill import (
    REGIMES,
    batch_stat_norm,
    class_partners,
    dlb_loss,
    pskd_alpha,
    pskd_targets,
    score_loss,
)
from tgp.data.samplers import ClassPairBatchSampler, DLBBatchSampler
from tgp.errors import ConfigError
from tgp.pruning.mask import prunable_parameters
from tgp.pruning.scores import gradient_scores


def _cfg(tmp_path: Path, *overrides: str):
    return compose_cfg(["experiment=smoke", "pruning.sparsity=0.8", *overrides], tmp_path)


# ------------------------------------------------------------------ pipelines (tiny, CPU)
@pytest.mark.parametrize("overrides", [
    ("method=snip",),
    ("method=epsd", "method.regime=pskd"),
    ("method=epsd", "method.regime=dlb", "method.warmup_steps=2"),
], ids=["snip", "epsd-pskd", "epsd-dlb-warmup"])
def test_pipeline_exact_sparsity(tmp_path, overrides):
    from tgp.blocks import build_net
    from tgp.pipeline import run_pipeline
    from tgp.pruning.mask import load_mask

    cfg = _cfg(tmp_path, *overrides)
    run_dir = tmp_path / "run"
    row = run_pipeline(cfg, run_dir)
    assert json.loads((run_dir / "metrics.json").read_text())["measured_sparsity"] == row["measured_sparsity"]
    net = torch.load(run_dir / "student_sparse.pt", weights_only=True)
    mask = load_mask(run_dir / "prune" / "mask.pt")
    n = sum(m.numel() for m in mask.values())
    assert row["measured_sparsity"] == pytest.approx(round(0.8 * n) / n, abs=1e-12)
    assert sum(int((~m).sum()) for m in mask.values()) == round(0.8 * n)
    for name, m in mask.items():
        assert bool((net[name][~m] == 0).all())
    # Budget: the sparse budget every method's final network gets, in a stage named retrain, from the seeded init.
    assert row["epochs_retrain"] == cfg.retrain.epochs
    assert "teacher" not in row["stages_skipped"] and row["top1_teacher"] is None
    init = torch.load(run_dir / "init" / "net.pt", weights_only=True)

    class _R:  # build_net needs only cfg and what the data builds its networks with (dm.model_kwargs())
        pass

    r = _R()
    r.cfg = cfg
    channels = int(cfg.data.channels)
    r.dm = type("D", (), {"model_kwargs": lambda self: {"num_classes": 10, "in_channels": channels}})()
    fresh = build_net(r, cfg.model).state_dict()
    assert all(torch.equal(init[k], fresh[k]) for k in init)
    if "method.warmup_steps=2" in overrides:
        # The warm-up's cost is measured: 2 steps of the global batch, stopped mid-epoch, at the per-example
        # FLOPs of the retrain stage's dense count (same network and regime, counted by Training.fit).
        warmup = json.loads((run_dir / "warmup" / "result.json").read_text())
        retrain = json.loads((run_dir / "retrain" / "result.json").read_text())
        assert warmup["steps"] == 2 and warmup["train_examples"] == 2 * cfg.data.batch_size
        per_example = retrain["train_flops_dense"] // retrain["train_examples"]
        assert warmup["train_flops_dense"] == warmup["train_flops"] == per_example * warmup["train_examples"]
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["cost_unmeasured"] == [] and metrics["cost_flops_own"] == warmup["train_flops"] + retrain["train_flops"]


# ------------------------------------------------------------------ the SD score
def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(24, 1, 8, 8, generator=g), torch.arange(24) % 5


def _scores(net, loss_fn):
    params = prunable_parameters(net)
    s = gradient_scores(net, params, [_batch()], loss_fn)
    flat = torch.cat([v.flatten() for v in s.values()])
    return flat / flat.sum()


@pytest.mark.parametrize("regime", REGIMES)
def test_sd_score_differs_from_snip(regime):
    net = _tiny_net()
    kw = dict(num_classes=5, alpha=0.8, temperature=3.0, dlb_weight=1.0, cskd_weight=1.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    sd = _scores(net, score_loss(regime, score_loss="sd", **kw))
    ce = _scores(net, score_loss(regime, score_loss="ce", **kw))
    # Normalized, so a score that is only a multiple of SNIP's (same mask) would compare equal.
    assert not torch.allclose(sd, ce, rtol=1e-3, atol=1e-7)
    assert torch.isfinite(sd).all() and (sd >= 0).all()
    # Scoring leaves weights, BatchNorm statistics, modes and .grad untouched.
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in net.parameters()) and net.training


def test_batch_stat_norm_restores_running_stats():
    net = _tiny_net().eval()
    bn = net[1]
    mean = bn.running_mean
    with batch_stat_norm(net):
        assert bn.training
        net(_batch()[0]).sum().backward()
    assert not bn.training and bn.running_mean is mean and torch.equal(mean, torch.zeros(6))


# ------------------------------------------------------------------ PS-KD
def test_pskd_targets():
    y = torch.tensor([0, 2, 1, 2])
    onehot = torch.nn.functional.one_hot(y, 3).float()
    p_prev = torch.softmax(torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    total = 10
    alphas = [pskd_alpha(t, total, 0.8) for t in range(total)]
    assert alphas[0] == 0.0
    assert torch.allclose(torch.tensor(alphas), 0.8 * torch.arange(total) / total)  # linear in the epoch
    assert torch.equal(pskd_targets(y, p_prev, alphas[0], 3), onehot)  # epoch 0: one-hot
    for a in alphas[1:]:
        q = pskd_targets(y, p_prev, a, 3)
        assert torch.allclose(q, (1 - a) * onehot + a * p_prev)
        assert torch.allclose(q.sum(1), torch.ones(4))
    seen = torch.tensor([True, False, True, True])
    q = pskd_targets(y, p_prev, 0.5, 3, seen)
    assert torch.equal(q[1], onehot[1]) and torch.allclose(q[0], 0.5 * onehot[0] + 0.5 * p_prev[0])


def test_pskd_module_stores_predictions_by_index():
    from tgp.lit import SelfDistillModule

    net = _tiny_net()
    m = SelfDistillModule(net, regime="pskd", num_train=30, epochs=4, num_classes=5)
    x, y = _batch()
    idx = torch.arange(24) + 3
    m.training_step((x, y, idx), 0)  # epoch 0: one-hot targets; predictions stored by index
    assert bool(m.pskd_seen[idx].all()) and not bool(m.pskd_seen[:3].any())
    with torch.no_grad():
        expected = torch.softmax(net.train()(x), dim=1)
    assert torch.allclose(m.pskd_prev[idx], expected, atol=1e-6)


# ------------------------------------------------------------------ DLB
def test_dlb_batches_overlap_by_half():
    torch.manual_seed(0)
    sampler = DLBBatchSampler(num_samples=50, batch_size=8)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 50 // 4 - 1
    for a, b in zip(batches[:-1], batches[1:]):
        assert len(a) == len(b) == 8
        assert a[4:] == b[:4]  # the second half of batch t is the first half of batch t+1
        assert not set(a[:4]) & set(b[4:])  # the other halves are new samples
    assert len({i for b in batches for i in b}) == 48  # each epoch: all but a random remainder


def test_dlb_loss_is_ce_without_previous_batch_and_adds_kl_with_it():
    z = torch.randn(8, 5, requires_grad=True)
    y = torch.arange(8) % 5
    ce, _ = dlb_loss(z, y, None, temperature=3.0, weight=1.0)
    assert torch.allclose(ce, torch.nn.functional.cross_entropy(z, y))
    prev = torch.softmax(torch.randn(4, 5), dim=1)
    total, parts = dlb_loss(z, y, prev, temperature=3.0, weight=1.0)
    assert total > ce and parts["kd"] > 0
    # The KL touches only the shared (first) half.
    g = torch.autograd.grad(total - ce, z)[0]
    assert torch.count_nonzero(g[4:]) == 0 and torch.count_nonzero(g[:4]) > 0


# ------------------------------------------------------------------ CS-KD
def test_cskd_pairs_share_the_class():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 3])
    torch.manual_seed(0)
    for batch in ClassPairBatchSampler(labels, batch_size=6):
        h = len(batch) // 2
        for i, j in zip(batch[:h], batch[h:]):
            assert labels[i] == labels[j]
            assert i != j or int((labels == labels[i]).sum()) == 1
    p = class_partners(labels)
    assert torch.equal(labels[p], labels) and p[8] == 8 and p[0] == 3


# ------------------------------------------------------------------ bad input
def test_unknown_regime_is_a_config_error(tmp_path):
    from tgp.methods.at_init import check_epsd

    cfg = _cfg(tmp_path, "method=epsd", "method.regime=bogus")
    with pytest.raises(ConfigError) as err:
        check_epsd(cfg)
    assert err.value.setting == "method.regime" and err.value.value == "bogus"
    assert all(r in str(err.value) for r in ("pskd", "dlb", "cskd"))
    with pytest.raises(ConfigError, match="method.score_loss"):
        check_epsd(_cfg(tmp_path, "method=epsd", "method.score_loss=kl"))
    with pytest.raises(ConfigError, match="method.warmup_steps"):
        check_epsd(_cfg(tmp_path, "method=epsd", "method.warmup_steps=-1"))


def test_unknown_regime_fails_before_any_stage(tmp_path):
    from tgp.pipeline import run_pipeline

    with pytest.raises(ConfigError, match="method.regime"):
        run_pipeline(_cfg(tmp_path, "method=epsd", "method.regime=ps-kd"), tmp_path / "run")
    assert not (tmp_path / "run" / "init").exists()
