"""Scores, the global threshold, masks and their enforcement during training."""

import copy
import warnings

import lightning as L
import pytest
import torch
from torch import nn

from tgp.data import SyntheticDataModule
from tgp.distill import DistillationLoss
from tgp.errors import CheckpointMismatchError, ConfigError
from tgp.models import build_model
from tgp.lit import ClassifierModule
from tgp.pruning import (
    MaskEnforcer, apply_mask, global_threshold, gradient_scores, load_mask, magnitude_scores,
    prunable_parameters, save_mask, sparsity_report,
)


def tiny_net(classes=4, seed=0):
    torch.manual_seed(seed)
    return build_model("resnet20", num_classes=classes, in_channels=3, width=4)


def batches(n=2, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, classes, (8,), generator=g)) for _ in range(n)]


# -- global threshold ----------------------------------------------------------------------------
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9, 0.98, 0.999])
def test_global_threshold_removes_exactly_round_s_n(sparsity):
    g = torch.Generator().manual_seed(1)
    scores = {"a": torch.rand(7, 3, generator=g), "b": torch.rand(101, generator=g), "c": torch.rand(2, 2, 5, generator=g)}
    masks = global_threshold(scores, sparsity)
    n = sum(s.numel() for s in scores.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(sparsity * n)
    assert all(m.dtype == torch.bool and m.shape == scores[k].shape for k, m in masks.items())
    # The kept weights are the highest-scoring ones.
    kept = torch.cat([scores[k][m] for k, m in masks.items()])
    removed = torch.cat([scores[k][~m] for k, m in masks.items()])
    if len(kept) and len(removed):
        assert kept.min() >= removed.max()


def test_ties_are_broken_deterministically_by_position():
    scores = {"a": torch.ones(4), "b": torch.ones(6)}
    m1 = global_threshold(scores, 0.5)
    m2 = global_threshold({k: v.clone() for k, v in scores.items()}, 0.5)
    assert all(torch.equal(m1[k], m2[k]) for k in scores)
    # Equal scores: the first five in dict-then-flat order go first.
    assert m1["a"].tolist() == [False] * 4 and m1["b"].tolist() == [False] + [True] * 5


def test_per_layer_floor_is_honoured():
    scores = {"big": torch.arange(100.0) + 100, "small": torch.arange(10.0)}
    plain = global_threshold(scores, 0.5)
    assert not plain["small"].any()  # without a floor the low-scoring layer is wiped out
    floored = global_threshold(scores, 0.5, min_layer_density=0.3)
    assert int(floored["small"].sum()) >= 3 and int(floored["big"].sum()) >= 30
    assert sum(int((~m).sum()) for m in floored.values()) == 55
    with pytest.raises(ConfigError, match="min_layer_density"):
        global_threshold(scores, 0.9, min_layer_density=0.5)


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1])
def test_sparsity_outside_unit_interval_is_rejected(bad):
    with pytest.raises(ConfigError, match="pruning.sparsity"):
        global_threshold({"a": torch.rand(10)}, bad)


def test_empty_layer_warns():
    with pytest.warns(UserWarning, match="removed every weight"):
        global_threshold({"a": torch.zeros(10), "b": torch.ones(10)}, 0.5)


# -- prunable set and mask artifacts -------------------------------------------------------------
def test_prunable_parameters_and_exclude():
    net = tiny_net()
    params = prunable_parameters(net)
    assert "fc.weight" in params and "conv1.weight" in params
    assert not any(n.endswith("bias") or "bn" in n for n in params)
    kept = prunable_parameters(net, ["conv1", "fc"])
    assert "conv1.weight" not in kept and "fc.weight" not in kept and len(kept) == len(params) - 2
    with pytest.raises(ConfigError, match="pruning.exclude"):
        prunable_parameters(net, ["no_such_layer*"])


def test_mask_round_trip_and_mismatch(tmp_path):
    net = tiny_net()
    mask = global_threshold(magnitude_scores(net, prunable_parameters(net)), 0.7)
    save_mask(mask, tmp_path / "mask.pt")
    loaded = load_mask(tmp_path / "mask.pt", net)
    assert all(torch.equal(mask[k], loaded[k]) for k in mask)
    report = sparsity_report(loaded, net, target=0.7)
    assert report["prunable"]["sparsity"] == pytest.approx(round(0.7 * report["prunable"]["total"]) / report["prunable"]["total"])
    with pytest.raises(CheckpointMismatchError, match="shape"):
        load_mask(tmp_path / "mask.pt", tiny_net(classes=7))
    with pytest.raises(CheckpointMismatchError, match="does not fit"):
        load_mask(tmp_path / "mask.pt", build_model("vgg16", num_classes=4, width=8))


# -- scores --------------------------------------------------------------------------------------
def kd_loss_fn(criterion, teacher):
    return lambda model, x, y: criterion(model(x), y, teacher(x))[0]


def test_alpha_zero_tgp_score_equals_ce_gradient_score():
    net, teacher = tiny_net(seed=0), tiny_net(seed=1).eval()
    params = prunable_parameters(net)
    data = batches()
    ce = gradient_scores(net, params, data, lambda m, x, y: nn.functional.cross_entropy(m(x), y))
    tgp0 = gradient_scores(net, params, data, kd_loss_fn(DistillationLoss(kd_weight=0.0), teacher))
    tgp = gradient_scores(net, params, data, kd_loss_fn(DistillationLoss(kd_weight=0.5, confidence="batch"), teacher))
    assert all(torch.allclose(ce[k], tgp0[k]) for k in params)
    assert any(not torch.allclose(ce[k], tgp[k]) for k in params)


def test_score_is_theta_times_summed_gradient_and_touches_nothing():
    net = tiny_net()
    params = prunable_parameters(net)
    before = copy.deepcopy(net.state_dict())
    data = batches(3)
    loss = lambda m, x, y: nn.functional.cross_entropy(m(x), y)  # noqa: E731
    scores = gradient_scores(net, params, data, loss)
    # The model's state (weights and BatchNorm statistics) and .grad are untouched, and the mode restored.
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters()) and net.training
    # By hand, in eval mode: |θ ⊙ Σ_b ∇L_b|.
    net.eval()
    total = None
    for x, y in data:
        g = torch.autograd.grad(loss(net, x, y), list(params.values()))
        total = g if total is None else [a + b for a, b in zip(total, g)]
    for (name, p), g in zip(params.items(), total):
        assert torch.allclose(scores[name], (p.detach() * g).abs(), atol=1e-6)
    per_batch = gradient_scores(net, params, data, loss, accumulate="abs_per_batch")
    assert any(not torch.allclose(per_batch[k], scores[k]) for k in params)
    assert all((per_batch[k] >= scores[k] - 1e-6).all() for k in params)  # triangle inequality


def test_every_score_has_one_signature_and_the_callback_calls_them_alike():
    """``score(model, params, batches, loss_fn, *, seed)`` for each score of SCORES, against hand computations;
    OneShotPruning's mask is the global threshold of exactly that score (no branch per score name)."""
    from types import SimpleNamespace

    from tgp.pruning import SCORES, OneShotPruning

    net = tiny_net()
    params = prunable_parameters(net)
    data = batches(2)
    loss = lambda m, x, y: nn.functional.cross_entropy(m(x), y)  # noqa: E731
    g = torch.Generator().manual_seed(7)
    by_hand = {
        "magnitude": {n: p.detach().abs() for n, p in params.items()},
        "random": {n: torch.rand(p.shape, generator=g) for n, p in params.items()},  # drawn in params order
        "gradient": gradient_scores(net, params, data, loss),  # checked by hand in the test above
    }
    assert set(SCORES) == set(by_hand)
    for name, score in SCORES.items():
        got = score(net, params, iter(data), loss, seed=7)
        assert list(got) == list(params) and all(torch.equal(got[n], by_hand[name][n]) for n in params), name
        if name == "gradient":  # needs the trainer's score batches: covered by the pipeline tests
            continue
        module = SimpleNamespace(net=net)  # no objective, no trainer: these scores use neither
        mask = OneShotPruning(sparsity=0.6, score=name, seed=7).compute_mask(None, module)
        expected = global_threshold(by_hand[name], 0.6)
        assert all(torch.equal(mask[n], expected[n]) for n in params), name


# -- enforcement during training -----------------------------------------------------------------
@pytest.mark.parametrize("optimizer", [{"name": "sgd", "momentum": 0.9, "weight_decay": 5e-4},
                                       {"name": "adamw", "weight_decay": 0.05}])
@pytest.mark.parametrize("enforce", [True, False])
def test_masked_weights_stay_exactly_zero(optimizer, enforce):
    L.seed_everything(0, verbose=False)
    dm = SyntheticDataModule(num_classes=4, image_size=8, n_train=160, n_test=32, batch_size=16)
    net = build_model("resnet20", num_classes=4, in_channels=3, width=4)
    mask = global_threshold(magnitude_scores(net, prunable_parameters(net)), 0.8)
    module = ClassifierModule(net, DistillationLoss(kd_weight=0.0), mask=mask, optimizer=optimizer, lr=0.05, epochs=2)
    kept_before = {n: p.detach()[mask[n]].clone() for n, p in net.named_parameters() if n in mask}
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[MaskEnforcer()] if enforce else [])
    trainer.fit(module, datamodule=dm)
    params = dict(net.named_parameters())
    pruned_nonzero = sum(int(params[n].detach()[~m].ne(0).sum()) for n, m in mask.items())
    if enforce:
        assert pruned_nonzero == 0
        assert all(not torch.equal(params[n].detach()[mask[n]], v) for n, v in kept_before.items())
    else:
        # Without the enforcer, the optimizer revives pruned weights: the check above can fail.
        assert pruned_nonzero > 0


def test_apply_mask_zeroes_in_place():
    net = tiny_net()
    mask = global_threshold(magnitude_scores(net, prunable_parameters(net)), 0.5)
    apply_mask(net, mask)
    params = dict(net.named_parameters())
    assert all(int(params[n][~m].ne(0).sum()) == 0 for n, m in mask.items())


def test_threshold_equals_a_stable_sort_on_tie_heavy_scores():
    # The O(N) k-th value selection must remove exactly what "sort stably, drop the first k" removes.
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        scores = {"a": torch.randint(0, 5, (37,), generator=g).float(), "b": torch.randint(0, 5, (3, 7), generator=g).float()}
        sparsity = float(torch.rand(1, generator=g)) * 0.99
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            masks = global_threshold(scores, sparsity)
        flat = torch.cat([v.flatten() for v in scores.values()])
        expected = torch.ones_like(flat, dtype=torch.bool)
        expected[torch.sort(flat, stable=True).indices[: round(sparsity * flat.numel())]] = False
        assert torch.equal(torch.cat([m.flatten() for m in masks.values()]), expected)
