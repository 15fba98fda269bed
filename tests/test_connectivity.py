"""Effective sparsity (tgp.measure.connectivity), layer collapse (sparsity_report, its warning),
pruning.keep_class_rows (global_threshold's keep_rows) and OneShotPruning(invert=True)."""

from __future__ import annotations

import copy
import logging
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tgp.models import build_model
from tgp.pruning.callbacks import OneShotPruning
from tgp.pruning.mask import prunable_parameters, sparsity_report, warn_layer_collapse
from tgp.pruning.threshold import global_threshold
from tgp.measure.connectivity import effective_mask, effective_metrics, effective_sparsity
from tgp.measure.flops import flops


def _tiny_net(c_in=1, c_mid=2, c_out=2, classes=2):
    return nn.Sequential(
        nn.Conv2d(c_in, c_mid, 3, padding=1, bias=True), nn.BatchNorm2d(c_mid), nn.ReLU(inplace=True),
        nn.Conv2d(c_mid, c_out, 3, padding=1, bias=False), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_out, classes),
    )


def _ones(net):
    return {n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(net).items()}


def test_disconnected_paths_by_hand():
    net = _tiny_net()
    mask = _ones(net)
    mask["0.weight"][0] = False  # conv1 channel 0 emptied: conv2's weights reading it are dead
    mask["7.weight"][:, 1] = False  # no classifier weight reads conv2's channel 1: its kernels are dead
    eff = effective_mask(net, mask, torch.zeros(1, 1, 4, 4))  # 4x4: every 3x3 tap sees real pixels somewhere
    assert eff["0.weight"][1].all() and not eff["0.weight"][0].any()  # 9 effective
    expected_conv2 = torch.zeros(2, 2, 3, 3, dtype=torch.bool)
    expected_conv2[0, 1] = True  # out 0 (reaches the output) reading channel 1 (reached from the input)
    assert torch.equal(eff["3.weight"], expected_conv2)  # 9 effective
    assert torch.equal(eff["7.weight"], torch.tensor([[True, False], [True, False]]))  # 2 effective
    total = 18 + 36 + 4
    assert effective_sparsity(net, mask, torch.zeros(1, 1, 4, 4)) == pytest.approx(1 - (9 + 9 + 2) / total)
    # the plain sparsity counts 9 + 18 + 2 removed only
    assert sparsity_report(mask)["prunable"]["kept"] == 9 + 36 + 2


def test_one_pixel_input_only_the_centre_tap_is_effective():
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(3, 2))
    eff = effective_mask(net, None, torch.zeros(1, 2, 1, 1))  # None: the dense net
    centre = torch.zeros(3, 2, 3, 3, dtype=torch.bool)
    centre[:, :, 1, 1] = True
    assert torch.equal(eff["0.weight"], centre) and eff["4.weight"].all()
    assert effective_sparsity(net, None, torch.zeros(1, 2, 1, 1)) == pytest.approx(48 / 60)  # 8/9 of each kernel
    # at 3x3 every tap is used by some output position
    assert effective_sparsity(net, None, torch.zeros(1, 2, 3, 3)) == 0.0


def test_agrees_with_the_plain_float64_gradient_on_random_masks():
    """The binarized pass equals the textbook one (weights = mask, BN/biases off, ∂Σout/∂w > 0) where that
    one cannot overflow: a shallow net, average pooling only."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(6, 6, 3, stride=2, padding=1),
                        nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(5, 4))
    for density in (0.1, 0.2, 0.4):
        mask = {n: torch.rand_like(p) < density for n, p in prunable_parameters(net).items()}
        ref = copy.deepcopy(net).double()
        with torch.no_grad():
            for n, p in ref.named_parameters():
                p.copy_(mask[n].double() if n in mask else torch.zeros_like(p))
        ref(torch.ones(1, 3, 5, 5, dtype=torch.float64)).sum().backward()
        grads = dict(ref.named_parameters())
        expected = {n: m & (grads[n].grad > 0) for n, m in mask.items()}
        got = effective_mask(net, mask, torch.zeros(1, 3, 5, 5))
        assert all(torch.equal(got[n], expected[n]) for n in mask)


def test_resnet18_tiny_at_8px_has_the_dead_last_stage():
    # model=resnet18_tiny (width 8) on digits (1 channel, 8x8): stage maps 8, 4, 2, 1.
    net = build_model("resnet18", 10, 1, 8)
    params = prunable_parameters(net)
    total = sum(p.numel() for p in params.values())
    # By hand: layer4.0.conv1 (3x3, stride 2, pad 1, 2x2 -> 1x1) reads real pixels with 4 of its 9
    # taps; every 3x3 conv of layer4 on its 1x1 map (layer4.0.conv2, layer4.1.conv1/2) only with its
    # centre tap. Everything else (stem, stages 1-3 at >= 2x2, shortcuts, fc) is live.
    n = {k: params[f"layers.3.{k}.weight"].numel() for k in ("0.conv1", "0.conv2", "1.conv1", "1.conv2")}
    dead = n["0.conv1"] * 5 // 9 + (n["0.conv2"] + n["1.conv1"] + n["1.conv2"]) * 8 // 9
    assert (dead, total) == (108_544, 175_048)
    eff = effective_mask(net, None, torch.zeros(1, 1, 8, 8))
    assert sum(int((~m).sum()) for m in eff.values()) == dead  # 62.0 %
    assert effective_sparsity(net, None, torch.zeros(1, 1, 32, 32)) == 0.0
    # resnet20_tiny: three stages, 8 -> 4 -> 2, no 1x1 map
    assert effective_sparsity(build_model("resnet20", 10, 1, 8), None, torch.zeros(1, 1, 8, 8)) == 0.0


def test_effective_metrics_of_a_pruned_net():
    torch.manual_seed(0)
    net = build_model("resnet20", 10, 3, 4)
    params = prunable_parameters(net)
    mask = global_threshold({n: torch.rand_like(p) for n, p in params.items()}, 0.9)
    with torch.no_grad():
        for n, m in mask.items():
            params[n].mul_(m)
    before = {n: p.detach().clone() for n, p in net.state_dict().items()}
    row = effective_metrics(net, mask, torch.zeros(1, 3, 8, 8))
    measured = 1 - sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
    assert row["effective_sparsity_dense"] == 0.0
    assert measured <= row["effective_sparsity"] < 1
    assert row["flops_effective"] <= flops(net, torch.zeros(1, 3, 8, 8))[1]
    assert all(torch.equal(before[n], p) for n, p in net.state_dict().items())  # the net is untouched
    assert all(p.grad is None for p in net.parameters())


def test_integer_inputs_are_not_analyzed_none_instead_of_an_error():
    """Reachability travels through the input's values: token ids (integers) have none to send, so the
    connectivity fields are None rather than a wrong number or an error."""
    net = nn.Sequential(nn.Embedding(50, 8), nn.Flatten(), nn.Linear(8 * 6, 4))
    ids = torch.randint(0, 50, (2, 6))
    assert effective_mask(net, None, ids) is None and effective_sparsity(net, None, ids) is None
    assert effective_metrics(net, None, ids) == {"effective_sparsity": None, "effective_sparsity_dense": None,
                                                 "flops_effective": None}


# -- layer collapse and keep_class_rows --------------------------------------------------------
def _scores_with_weak_classes():
    torch.manual_seed(1)
    conv = torch.rand(8, 3, 3, 3) + 0.5
    fc = torch.rand(5, 8) + 0.5
    fc[1] *= 0.01  # classes 1 and 3 score lowest everywhere: the plain threshold empties their rows
    fc[3] *= 0.02
    return {"conv.weight": conv, "fc.weight": fc}


def _reference_keep_rows(scores, sparsity, name):
    """The documented rule, by sorting: the plain cut; each empty row keeps its top weight; as many of
    the lowest-scoring otherwise-kept weights (not a row's top) are removed instead."""
    plain = global_threshold(scores, sparsity)
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1) for n in names])
    keep = torch.cat([plain[n].reshape(-1) for n in names])
    offset = sum(scores[n].numel() for n in names[: names.index(name)])
    rows = scores[name].reshape(scores[name].shape[0], -1)
    tops = {offset + i * rows.shape[1] + int(torch.argmax(r)) for i, r in enumerate(rows)}
    restored = [t for t in tops if not keep[t]]
    keep[restored] = True
    candidates = sorted((float(flat[i]), i) for i in range(flat.numel()) if keep[i] and i not in tops)
    for _, i in candidates[: len(restored)]:
        keep[i] = False
    sizes = [scores[n].numel() for n in names]
    return {n: m.view_as(scores[n]) for n, m in zip(names, keep.split(sizes))}


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.95])
def test_keep_rows_removes_exactly_k_and_leaves_no_empty_row(sparsity):
    scores = _scores_with_weak_classes()
    total = sum(s.numel() for s in scores.values())
    plain = global_threshold(scores, sparsity)
    assert {1, 3} <= set(sparsity_report(plain)["classes_without_weights"])
    kept = global_threshold(scores, sparsity, keep_rows=["fc.weight"])
    assert total - sum(int(m.sum()) for m in kept.values()) == round(sparsity * total)
    assert kept["fc.weight"].any(dim=1).all()
    assert sparsity_report(kept)["classes_without_weights"] == []
    expected = _reference_keep_rows(scores, sparsity, "fc.weight")
    assert all(torch.equal(kept[n], expected[n]) for n in scores)


def test_keep_rows_changes_nothing_when_no_row_is_empty():
    torch.manual_seed(2)
    scores = {"a": torch.rand(6, 10), "fc": torch.rand(4, 6)}
    plain = global_threshold(scores, 0.5)
    assert sparsity_report(plain)["classes_without_weights"] == []
    kept = global_threshold(scores, 0.5, keep_rows=["fc"])
    assert all(torch.equal(kept[n], plain[n]) for n in scores)
    ties = {"a": torch.ones(6, 10), "fc": torch.ones(4, 6)}  # all tied: the tie rule is unchanged
    assert all(torch.equal(global_threshold(ties, 0.3, keep_rows=["fc"])[n], global_threshold(ties, 0.3)[n])
               for n in ties)


def _fake_prune(net, **kw):
    callback = OneShotPruning(score="magnitude", **kw)
    got = {}
    callback._prune(SimpleNamespace(is_global_zero=True), SimpleNamespace(net=net, set_mask=got.update))
    return callback


def _net_with_weak_classes():
    torch.manual_seed(3)
    net = _tiny_net(1, 4, 4, classes=5)
    with torch.no_grad():
        for p in prunable_parameters(net).values():
            p.copy_(p.abs() + 1)
        net[7].weight[2] *= 1e-3  # class 2's weights are the smallest: magnitude pruning empties its row
    return net


def test_layer_collapse_warns_and_is_reported(caplog):
    net = _net_with_weak_classes()
    with caplog.at_level(logging.WARNING, logger="tgp"), pytest.warns(UserWarning, match=r"layer collapse.*class"):
        callback = _fake_prune(net, sparsity=0.1)
    assert callback.report["classes_without_weights"] == [2] and callback.report["classifier"] == "7.weight"
    assert callback.report["empty_layers"] == []
    assert any("7.weight" in r.getMessage() and "2" in r.getMessage() for r in caplog.records if r.name == "tgp")
    report = sparsity_report({"a": torch.zeros(3, dtype=torch.bool), "b": torch.ones(2, 2, dtype=torch.bool)})
    assert report["empty_layers"] == ["a"] and report["classes_without_weights"] == []
    with pytest.warns(UserWarning, match="every weight of 1 layer.*a"):
        warn_layer_collapse(report)
    # the guard: exactly the same count, every class keeps a weight, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guarded = _fake_prune(net, sparsity=0.1, keep_class_rows=True)
    assert guarded.report["classes_without_weights"] == [] and guarded.report["keep_class_rows"] is True
    assert guarded.report["prunable"]["kept"] == callback.report["prunable"]["kept"]


@pytest.mark.filterwarnings("ignore:layer collapse")
def test_invert_keeps_the_lowest_scores():
    torch.manual_seed(4)
    net = _tiny_net(1, 4, 4, classes=3)
    params = prunable_parameters(net)
    sparsity = 0.7
    inv = _fake_prune(net, sparsity=sparsity, invert=True).mask
    flat = torch.cat([p.detach().abs().reshape(-1) for p in params.values()])
    n_total = flat.numel()
    k = round(sparsity * n_total)
    lowest = torch.zeros(n_total, dtype=torch.bool)
    lowest[torch.argsort(flat)[: n_total - k]] = True  # continuous scores: no ties
    assert torch.equal(torch.cat([inv[n].reshape(-1) for n in params]), lowest)
    assert _fake_prune(net, sparsity=sparsity, invert=True).report["invert"] is True
