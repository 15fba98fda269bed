"""Sanity-check variants (pruning.sanity): exact counts per layer and globally, the exact mask for
reinit with other start weights, the complement order for invert, ERK densities; end to end."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_cfg, read_json
from tgp.errors import ConfigError
from tgp.pruning.mask import prunable_parameters
from tgp.pruning.sanity import (
    REINIT_SEED_OFFSET, erk_counts, erk_densities, erk_random, erk_scale, layer_shuffle, uniform_counts, uniform_random,
)
from tgp.pruning.threshold import global_threshold

SPARSITIES = (0.0, 0.37, 0.5, 0.9, 0.98, 0.999)


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    torch.manual_seed(0)
    cfg = compose_cfg(["experiment=smoke"], tmp_path_factory.mktemp("cfg"))
    net = instantiate(cfg.model, num_classes=10, in_channels=3)
    return net, {n: p.detach() for n, p in prunable_parameters(net).items()}


def _kept(mask):
    return {n: int(m.sum()) for n, m in mask.items()}


def test_layer_shuffle_keeps_every_layers_count_at_other_positions(params):
    _, ps = params
    mask = global_threshold({n: p.abs() for n, p in ps.items()}, 0.9)
    shuffled = layer_shuffle(mask, seed=3)
    assert _kept(shuffled) == _kept(mask) and list(shuffled) == list(mask)
    partial = [n for n, m in mask.items() if 0 < int(m.sum()) < m.numel()]
    assert partial and all(not torch.equal(shuffled[n], mask[n]) for n in partial)
    assert all(shuffled[n].shape == mask[n].shape and shuffled[n].dtype == torch.bool for n in mask)
    again, other = layer_shuffle(mask, seed=3), layer_shuffle(mask, seed=4)
    assert all(torch.equal(again[n], shuffled[n]) for n in mask)
    assert any(not torch.equal(other[n], shuffled[n]) for n in partial)


@pytest.mark.parametrize("s", SPARSITIES)
def test_random_uniform_each_layer_floor_or_ceil_by_largest_remainder_and_global_exact(params, s):
    _, ps = params
    n_total = sum(p.numel() for p in ps.values())
    mask = uniform_random(ps, s, seed=1)
    removed = {n: ps[n].numel() - k for n, k in _kept(mask).items()}
    assert sum(removed.values()) == round(s * n_total)
    assert _kept(mask) == uniform_counts(ps, s)
    for n, r in removed.items():
        q = s * ps[n].numel()
        assert r in (math.floor(q), math.ceil(q)), (n, r, q)
    # Largest remainder: a layer rounded up never has a smaller fractional part than one rounded down.
    up = [s * ps[n].numel() % 1 for n, r in removed.items() if r > s * ps[n].numel()]
    down = [s * ps[n].numel() % 1 for n, r in removed.items() if r < s * ps[n].numel()]
    assert not up or not down or min(up) >= max(down)
    assert all(torch.equal(uniform_random(ps, s, seed=1)[n], mask[n]) for n in ps)  # seeded


@pytest.mark.parametrize("s", SPARSITIES)
def test_random_erk_global_exact_densities_follow_the_formula_none_above_one(params, s):
    _, ps = params
    n_total = sum(p.numel() for p in ps.values())
    keep_total = n_total - round(s * n_total)
    dens = erk_densities({n: tuple(p.shape) for n, p in ps.items()}, s)
    assert all(0.0 <= d <= 1.0 for d in dens.values())
    assert sum(dens[n] * ps[n].numel() for n in ps) == pytest.approx(keep_total, abs=1e-6)
    free = [n for n in ps if dens[n] < 1.0]
    if free:  # uncapped layers: d_l = c·ε_l with one c; capped layers would have c·ε_l ≥ 1
        c = dens[free[0]] / erk_scale(ps[free[0]].shape)
        for n in ps:
            eps = erk_scale(ps[n].shape)
            assert dens[n] == pytest.approx(min(1.0, c * eps), rel=1e-9) and (n in free or c * eps >= 1 - 1e-12)
    mask = erk_random(ps, s, seed=2)
    kept = _kept(mask)
    assert kept == erk_counts(ps, s) and sum(kept.values()) == keep_total
    assert all(kept[n] <= ps[n].numel() and abs(kept[n] - dens[n] * ps[n].numel()) < 1 for n in ps)


def test_erk_formula_by_hand_and_capping_redistributes():
    # conv (out 4, in 2, 3×3): (2+4+3+3)/(2·4·9); linear (out 10, in 4): (4+10)/(4·10)
    assert erk_scale((4, 2, 3, 3)) == pytest.approx(12 / 72) and erk_scale((10, 4)) == pytest.approx(14 / 40)
    shapes = {"small": (2, 2), "big": (100, 100)}  # ε = 1 and 0.02: at 50 % sparsity "small" caps at 1
    dens = erk_densities(shapes, 0.5)
    assert dens["small"] == 1.0 and dens["big"] * 10_000 == pytest.approx(10_004 / 2 - 4)


def test_invert_keeps_exactly_the_lowest_scores(params):
    from tgp.blocks import SanityPruning

    net, ps = params
    k = round(0.8 * sum(p.numel() for p in ps.values()))
    module = SimpleNamespace(net=net)
    inverted = SanityPruning(sparsity=0.8, score="magnitude", sanity="invert", sanity_seed=0).compute_mask(None, module)
    names = list(ps)
    flat = torch.cat([ps[n].abs().reshape(-1) for n in names])
    order = torch.sort(flat, stable=True).indices  # independent of global_threshold's kthvalue
    expected = torch.zeros_like(flat, dtype=torch.bool)
    expected[order[: flat.numel() - k]] = True  # the N−k lowest kept
    got = torch.cat([inverted[n].reshape(-1) for n in names])
    assert int(got.sum()) == flat.numel() - k and torch.equal(got, expected)
    plain = SanityPruning(sparsity=0.8, score="magnitude", sanity=None, sanity_seed=0).compute_mask(None, module)
    assert flat[got].max() <= flat[torch.cat([plain[n].reshape(-1) for n in names])].min()


def test_bad_value_and_non_one_shot_method_are_config_errors(tmp_path):
    from tgp.checks.job import check_sanity
    from tgp.methods import get_method
    from tgp.pipeline import run_pipeline

    cfg = compose_cfg(["experiment=smoke", "pruning.sanity=layer_shufle"], tmp_path)
    with pytest.raises(ConfigError, match=r"^pruning.sanity='layer_shufle': .*did you mean pruning.sanity=layer_shuffle"):
        run_pipeline(cfg, tmp_path / "run")  # validate_job, before anything is written
    assert not (tmp_path / "run").exists()
    cfg = compose_cfg(["experiment=smoke", "method=imp", "pruning.sanity=reinit"], tmp_path)
    with pytest.raises(ConfigError, match=r"^pruning.sanity='reinit': method imp does not prune in one shot"):
        check_sanity(cfg, get_method("imp"))
    cfg = compose_cfg(["experiment=smoke", "pruning.sanity=random_erk", "pruning.min_layer_density=0.01"], tmp_path)
    with pytest.raises(ConfigError, match=r"^pruning.sanity='random_erk': .*min_layer_density"):
        check_sanity(cfg, get_method("tgp"))


@pytest.mark.parametrize("overrides, needle", [
    (["method=imp"], "method imp makes its masks with its own pruning rule"),
    (["method=colt"], "method colt makes its masks"),
    (["method=sdp"], "method sdp makes its masks"),
    (["pruning.sanity=random_uniform"], "pruning.sanity=random_uniform draws a random mask"),
    (["pruning.mask=some/mask.pt"], "pruning.mask='some/mask.pt' is used as it is"),
])
def test_keep_class_rows_refused_where_it_would_be_ignored(overrides, needle, tmp_path):
    from tgp.checks.job import check_keep_class_rows
    from tgp.methods import get_method

    cfg = compose_cfg(["experiment=smoke", "pruning.keep_class_rows=true", *overrides], tmp_path)
    with pytest.raises(ConfigError, match="^pruning.keep_class_rows=True: ") as e:
        check_keep_class_rows(cfg, get_method(str(cfg.method.name)))
    assert needle in str(e.value) and "Fix:" in str(e.value)


def test_keep_class_rows_accepted_where_a_one_shot_global_threshold_makes_the_mask(tmp_path):
    from tgp.checks.job import check_keep_class_rows
    from tgp.methods import get_method, load_all

    one_shot = sorted(n for n, spec in load_all().items() if spec.accepts_mask)
    assert one_shot == ["ce_grad", "epsd", "magnitude", "random", "snip", "tgp"]
    for method in one_shot:
        check_keep_class_rows(compose_cfg(["experiment=smoke", f"method={method}", "pruning.keep_class_rows=true"],
                                          tmp_path), get_method(method))


def test_run_name_shows_the_variant(tmp_path):
    from tgp.naming import run_name

    assert "-sanity_layer_shuffle-seed0-" in run_name(compose_cfg(["experiment=smoke", "pruning.sanity=layer_shuffle"], tmp_path))
    assert "sanity" not in run_name(compose_cfg(["experiment=smoke"], tmp_path))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Plain, layer_shuffle and reinit runs of tgp and snip sharing one stage store; the weights each
    retrain stage starts from are recorded (before its mask is applied)."""
    import tgp.blocks
    import tgp.methods.at_init
    from tgp.pipeline import run_pipeline

    tmp = tmp_path_factory.mktemp("sanity")
    starts, out = {}, {}
    real = tgp.blocks.make_module

    def recording(job, net, criterion, stage, *a, **kw):
        if stage == "retrain":
            starts[current] = {n: v.detach().clone() for n, v in net.state_dict().items()}
        return real(job, net, criterion, stage, *a, **kw)

    patch = pytest.MonkeyPatch()
    patch.setattr(tgp.blocks, "make_module", recording)
    patch.setattr(tgp.methods.at_init, "make_module", recording)
    try:
        for current in [("tgp", None), ("tgp", "layer_shuffle"), ("tgp", "reinit"), ("snip", None), ("snip", "reinit")]:
            method, sanity = current
            # Only the layer-shuffle run goes to the metrics row; the others stop after the stage compared.
            stop = [] if sanity == "layer_shuffle" else [f"stop_after={'prune' if current == ('snip', None) else 'retrain'}"]
            cfg = compose_cfg(["experiment=smoke", f"method={method}", f"pruning.sanity={sanity or 'null'}", *stop], tmp)
            run = tmp / f"{method}-{sanity}"
            out[current] = (run_pipeline(cfg, run), run)
    finally:
        patch.undo()
    return out, starts


def _mask(run):
    return torch.load(run / "prune" / "mask.pt", weights_only=True)


def test_end_to_end_layer_shuffle_records_the_variant_at_exact_sparsity(runs):
    out, _ = runs
    (row, run), (_, plain_run) = out[("tgp", "layer_shuffle")], out[("tgp", None)]
    report, result = read_json(run / "prune" / "sparsity_report.json"), read_json(run / "prune" / "result.json")
    assert row["sanity"] == report["sanity"] == result["sanity"] == "layer_shuffle"
    assert read_json(plain_run / "prune" / "sparsity_report.json")["sanity"] is None
    assert read_json(run / "metrics.json")["sanity"] == "layer_shuffle"
    n = report["prunable"]["total"]
    assert row["measured_sparsity"] == round(0.9 * n) / n and report["prunable"]["kept"] == n - round(0.9 * n)
    mask, plain = _mask(run), _mask(plain_run)
    assert _kept(mask) == _kept(plain) and any(not torch.equal(mask[k], plain[k]) for k in mask)
    assert {"teacher", "kd_pretrain"} <= set(row["stages_skipped"])  # shared with the plain run


@pytest.mark.parametrize("method,source", [("tgp", "kd_pretrain"), ("snip", "init")])
def test_end_to_end_reinit_same_mask_other_start_weights(runs, method, source):
    out, starts = runs
    (_, run), (_, plain_run) = out[(method, "reinit")], out[(method, None)]
    report = read_json(run / "prune" / "sparsity_report.json")
    assert report["sanity"] == read_json(run / "prune" / "result.json")["sanity"] == "reinit"
    mask, plain = _mask(run), _mask(plain_run)
    assert list(mask) == list(plain) and all(torch.equal(mask[k], plain[k]) for k in mask)  # the exact mask
    method_weights = torch.load(plain_run / source / "net.pt", weights_only=True)
    plain_start, reinit_start = starts.get((method, None)), starts[(method, "reinit")]
    if plain_start is not None:  # the recording is faithful: the plain method starts from its own weights
        assert all(torch.equal(plain_start[k], method_weights[k]) for k in method_weights)
    for k in mask:  # the sparse network trains from other weights: a fresh init, not the method's
        assert not torch.equal(reinit_start[k][mask[k]], method_weights[k][mask[k]]), k
    final = torch.load(run / "retrain" / "net.pt", weights_only=True)
    n = report["prunable"]["total"]
    assert sum(int((final[k] == 0).sum()) for k in mask) >= round(0.9 * n) == n - report["prunable"]["kept"]
    assert all(not final[k][~mask[k]].any() for k in mask)  # pruned weights stay exactly zero from the fresh init
    assert REINIT_SEED_OFFSET not in (0, 1000)  # neither the student's nor the teacher's seed
