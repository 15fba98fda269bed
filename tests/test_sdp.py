"""SDP: the cross-correlation loss against hand computations, the cubic schedule, and an end-to-end run."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import compose_cfg, read_json
from tgp.distill.cross_correlation import cross_correlation, cross_correlation_loss
from tgp.errors import ConfigError
from tgp.pruning.nested import mask_counts
from tgp.pruning.schedules import cubic_sparsity
from tgp.pipeline import run_pipeline
from tgp.pruning.mask import load_mask

SMOKE = ["experiment=smoke", "pruning.sparsity=0.8", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "logger=none", "data.limit_test=64", "method=sdp"]


def test_cc_loss_is_zero_with_zero_gradient_for_identical_standardized_features():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 8, generator=g)
    z = (z - z.mean(0)) / z.std(0, unbiased=False)  # already standardized
    za = z.clone().requires_grad_(True)
    loss = cross_correlation_loss(za, z, off_diagonal_weight=0.0)
    loss.backward()
    assert float(loss.detach()) < 1e-8
    assert float(za.grad.abs().max()) < 1e-5
    # any affine rescaling per feature gives the same correlations
    assert float(cross_correlation_loss(3 * z + 1, z, 0.0)) < 1e-8
    # the off-diagonal term alone measures how correlated different features are
    off = float(cross_correlation_loss(z, z, 1.0))
    c = cross_correlation(z, z)
    assert off == pytest.approx(float((c ** 2).sum() - (torch.diagonal(c) ** 2).sum()), rel=1e-4)


def hand_cc_loss(za, zb, lam, eps=1e-5):
    """L_CC written out in plain Python (population variance, C = ẑ_aᵀ ẑ_b / B)."""
    b, d = len(za), len(za[0])

    def standardize(z):
        cols = []
        for j in range(d):
            col = [row[j] for row in z]
            m = sum(col) / b
            var = sum((v - m) ** 2 for v in col) / b
            cols.append([(v - m) / math.sqrt(var + eps) for v in col])
        return cols  # cols[j][i]

    a, c_ = standardize(za), standardize(zb)
    C = [[sum(a[i][k] * c_[j][k] for k in range(b)) / b for j in range(d)] for i in range(d)]
    on = sum((1 - C[i][i]) ** 2 for i in range(d))
    off = sum(C[i][j] ** 2 for i in range(d) for j in range(d) if i != j)
    return on + lam * off, C


def test_cc_loss_matches_hand_computation():
    za = [[1.0, 2.0], [3.0, 0.0], [5.0, 4.0], [-1.0, 1.0]]
    zb = [[0.5, 1.0], [2.0, -1.0], [4.0, 3.0], [0.0, 0.0]]
    want, C = hand_cc_loss(za, zb, lam=0.3)
    got = cross_correlation_loss(torch.tensor(za), torch.tensor(zb), off_diagonal_weight=0.3)
    assert float(got) == pytest.approx(want, rel=1e-5)
    got_c = cross_correlation(torch.tensor(za), torch.tensor(zb))
    for i in range(2):
        for j in range(2):
            assert float(got_c[i, j]) == pytest.approx(C[i][j], rel=1e-5)
    # a perfectly anti-correlated feature costs (1 − (−1))² = 4
    z = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    assert float(cross_correlation_loss(z, -z)) == pytest.approx(4.0, rel=1e-4)


def test_cubic_schedule():
    assert cubic_sparsity(0, 4, 0.8) == 0.0
    assert cubic_sparsity(4, 4, 0.8) == pytest.approx(0.8)
    assert cubic_sparsity(9, 4, 0.8) == pytest.approx(0.8)
    assert cubic_sparsity(2, 4, 0.8) == pytest.approx(0.8 * (1 - 0.5 ** 3))
    values = [cubic_sparsity(t, 10, 0.9) for t in range(11)]
    assert values == sorted(values)


def test_sdp_bad_ramp_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="method.prune_epochs"):
        run_pipeline(compose_cfg([*SMOKE, "retrain.epochs=2", "method.prune_epochs=3"], tmp_path), tmp_path / "run")


def test_sdp_reaches_exact_sparsity(tmp_path):
    cfg = compose_cfg([*SMOKE, "retrain.epochs=3", "method.prune_epochs=2", "method.cc_weight=0.5"], tmp_path)
    run_dir = tmp_path / "run"
    row = run_pipeline(cfg, run_dir)
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["measured_sparsity"] == pytest.approx(0.8, abs=1e-4)
    # the retrain stage holds the final network and mask (no copy-only stage); the run folder has the mask too
    assert (metrics["net_stage"], metrics["mask_stage"]) == ("retrain", "retrain") and not (run_dir / "prune").exists()
    assert (run_dir / "mask.pt").read_bytes() == (run_dir / "retrain" / "mask.pt").read_bytes()
    mask = load_mask(run_dir / "mask.pt")
    total, kept = mask_counts(mask)
    assert total - kept == round(0.8 * total)
    # the final weights are zero where the mask prunes
    state = torch.load(run_dir / "retrain" / "net.pt", weights_only=True)
    for name, m in mask.items():
        assert bool((state[name][~m] == 0).all())
    # gradual: the ramp passed a lower sparsity before reaching the target, then held it
    report = read_json(run_dir / "retrain" / "sparsity_report.json")
    history = [s for _, s in report["history"]]
    assert history[0] < history[1] == pytest.approx(history[2]) == pytest.approx(0.8, abs=1e-4)
    assert metrics["epochs_total"] == 1 + 3  # dense + the pruning fine-tuning
    assert row["stages_skipped"] == []
    result = read_json(run_dir / "retrain" / "result.json")
    assert result["best_epoch"] >= 1  # best-val weights are taken from an epoch at the final mask
