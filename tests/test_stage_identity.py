"""Stage identity by construction: keys cover exactly what a stage reads, views refuse the rest,
versions and parents chain, methods are declared once and never import each other."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ReadonlyConfigError

from conftest import CONF, ROOT, compose_cfg, read_json
from tgp.methods import load_all
from tgp.naming import INFRA_KEYS
from tgp.stages import KINDS, StageKind, stage_key, stage_view

METHODS = load_all()  # imports every method file, so KINDS holds every stage kind
# Settings that change no stage's result, each for a stated reason.
NOT_RESULTS = {
    "name": "groups sweep folders",
    "stop_after": "where a job stops, not what a stage computes",
    "progress_bar": "console only",
    "channels_last": "memory layout (readable by every stage, excluded from keys)",
    "compile": "torch.compile: the same functions, float rounding only (readable by every stage, excluded from keys)",
    "compile_mode": "which torch.compile mode: float rounding and speed only (as compile)",
    "paths": "where files go",
    "logger": "where metrics go",
    "verbose": "console only",
    "ckpt_path": "what tgp-eval evaluates",
    "tags": "labels for W&B and the report",
    "extras": "printing the config tree, silencing known warnings",
    "method.max_rounds": "an upper bound checked before any stage, never read by one",
}


def _leaves(container, prefix=""):
    if isinstance(container, dict):
        for k, v in container.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], container


def _perturbed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5 + 0.1
    if isinstance(value, str):
        return value + "_x"
    if value is None:
        return 7
    if isinstance(value, list):
        return [*value, "x"]
    raise TypeError(value)


def _relevant(resolved: dict, kind: StageKind) -> dict:
    """The resolved values under ``kind``'s nodes minus infrastructure keys — computed here
    independently of ``stage_key`` (plain dict walking, equality, no hashing)."""
    out = {}
    for node in kind.nodes:
        value = resolved
        for part in node.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in INFRA_KEYS.get(node, ())}
        out[node] = value
    return out


def _infra(path: str) -> bool:
    head, _, rest = path.partition(".")
    return path in NOT_RESULTS or head in NOT_RESULTS or rest.split(".")[0] in INFRA_KEYS.get(head, ())


def _text_methods() -> list[str]:
    """The methods the registry lets run on a two-class text task (MethodSpec.data_check), one per method file
    and set of stages (the one-shot methods differ in their score only, which every image case covers)."""
    from types import SimpleNamespace

    from tgp.methods import methods_for

    seen, out = set(), []
    for name in methods_for(SimpleNamespace(name="roleswap", modality="text", regression=False, num_classes=2)):
        family = (METHODS[name].run.__module__, METHODS[name].stages)
        if family not in seen:
            seen.add(family)
            out.append(name)
    return out


# Every method on the image smoke recipe; every text-capable method on the text demo's recipe (tiny BERT,
# AdamW, linear schedule, gradient clipping, a text teacher); the hub recipes' data and model nodes.
CASES = ([("experiment=smoke", m) for m in sorted(METHODS)]
         + [("experiment=demo_text", m) for m in _text_methods()]
         + [("experiment=demo_text data=glue data.task=stsb model=bert_base teacher=bert_base", "tgp")]
         + [("experiment=demo_text data=xglue model=xlmr_base teacher=xlmr_base", "tgp")])


@pytest.mark.parametrize("recipe, method", CASES, ids=[f"{r.split()[0].split('=')[1]}{'+hub' if ' ' in r else ''}-{m}"
                                                        + ("-xglue" if "xglue" in r else "") for r, m in CASES])
def test_every_leaf_changes_exactly_the_keys_of_the_stages_that_read_it(recipe, method, tmp_path):
    overrides = recipe.split()
    if "model=bert_base" in overrides or "model=xlmr_base" in overrides:
        overrides += ["~model.config", "~teacher.net.config"]  # the tiny model's sizes do not apply to hub models
    cfg = compose_cfg([*overrides, f"method={method}"], tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    base_keys = {name: stage_key(cfg, kind) for name, kind in KINDS.items()}
    # Keys of a resolved copy equal those of the config with interpolations (stage_key resolves),
    # so the perturbed configs below are resolved once each: the same keys, computed faster.
    assert {n: stage_key(OmegaConf.create(resolved), k) for n, k in KINDS.items()} == base_keys
    base_relevant = {name: _relevant(resolved, kind) for name, kind in KINDS.items()}
    unread = []
    for path, value in _leaves({k: v for k, v in resolved.items() if k != "hydra"}):
        other = cfg.copy()
        OmegaConf.update(other, path, _perturbed(value), force_add=True)
        other_resolved = OmegaConf.to_container(other, resolve=True)
        flat = OmegaConf.create(other_resolved)
        changed = {name for name, kind in KINDS.items() if stage_key(flat, kind) != base_keys[name]}
        expected = {name for name, kind in KINDS.items() if _relevant(other_resolved, kind) != base_relevant[name]}
        assert changed == expected, f"{path}: keys changed for {sorted(changed)}, reads changed for {sorted(expected)}"
        if not changed:
            unread.append(path)
    # A leaf that no stage key covers must be a setting that cannot change a result.
    assert [p for p in unread if not _infra(p)] == []


def test_view_holds_only_declared_nodes_and_is_read_only(tmp_path):
    cfg = compose_cfg(["experiment=smoke"], tmp_path)
    kind = KINDS["kd_pretrain"]
    view = stage_view(cfg, kind)
    assert view.distill.kd_weight == cfg.distill.kd_weight and view.kd_pretrain.epochs == cfg.kd_pretrain.epochs
    assert view.seed == cfg.seed and view.data.batch_size == cfg.data.batch_size  # base nodes
    with pytest.raises(ConfigAttributeError):
        _ = view.pruning  # not declared by kd_pretrain
    with pytest.raises(ConfigAttributeError):
        _ = view.retrain.epochs
    with pytest.raises(ReadonlyConfigError):
        view.distill.kd_weight = 0.3
    partial = stage_view(cfg, KINDS["imp_dense"] if "imp_dense" in KINDS else kind)
    assert "imp_dense" not in KINDS or set(partial.method) == {"epochs_per_round", "lr", "rewind_epoch"}


def test_a_stage_that_reads_an_undeclared_setting_fails_and_one_that_captures_the_config_is_refused(tmp_path):
    from tgp.job import Job

    cfg = compose_cfg(["experiment=smoke"], tmp_path)
    job = Job(cfg, tmp_path / "run", dm=None)
    kind = KINDS.get("test_reads_model") or StageKind("test_reads_model", reads=("model",))

    with pytest.raises(ConfigAttributeError):
        job.run(kind, lambda folder, view: {"s": view.pruning.sparsity})
    attempts = read_json(next((tmp_path / "stages").glob("test_reads_model-*")) / "attempts.json")
    assert attempts[-1]["status"] == "failed" and not list((tmp_path / "stages").glob("*/result.json"))

    full = job.cfg

    def captures(folder, view):
        return {"s": full.pruning.sparsity}

    with pytest.raises(RuntimeError, match="closes over a config"):
        job.run(kind, captures, name="other")
    assert not (tmp_path / "run" / "other").exists()

    result = job.run(kind, lambda folder, view: {"width": view.model.width}, name="ok")
    assert result["kind"] == "test_reads_model" and result["version"] == 1 and result["width"] == cfg.model.width
    assert read_json(tmp_path / "run" / "ok" / "result.json")["key"] == job.stages.keys["ok"]


def test_version_parent_and_name_are_part_of_the_key(tmp_path):
    cfg = compose_cfg(["experiment=smoke"], tmp_path)
    KINDS.pop("test_versioned", None)
    v1 = StageKind("test_versioned", reads=("model",))
    key = stage_key(cfg, v1)
    KINDS.pop("test_versioned")
    v2 = dataclasses.replace(v1, version=2)
    assert stage_key(cfg, v2) != key
    assert stage_key(cfg, v1, parent="abc") != stage_key(cfg, v1, parent="abd")
    assert stage_key(cfg, v1, name="colt_round_01_a") != stage_key(cfg, v1, name="colt_round_01_b")
    with pytest.raises(RuntimeError, match="declared twice"):
        StageKind("test_versioned", reads=("pruning",))


def test_no_method_file_imports_another():
    folder = ROOT / "tgp" / "methods"
    method_files = {p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "registry")}
    assert method_files >= {"one_shot", "at_init", "iterative", "sdp"}
    for stem in method_files:
        tree = ast.parse((folder / f"{stem}.py").read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names)
        others = {m for m in imported if m.startswith("tgp.methods.") and m != "tgp.methods.registry"}
        assert not others, f"tgp/methods/{stem}.py imports {others}"


def test_each_method_is_one_registry_entry_and_one_config_whose_keys_are_its_schema():
    configs = {p.stem: yaml.safe_load(p.read_text()) for p in (CONF / "method").glob("*.yaml")}
    assert set(configs) == set(METHODS)
    for name, spec in METHODS.items():
        keys = set(configs[name]) - {"name"}
        assert configs[name]["name"] == name
        fields = {f.name for f in dataclasses.fields(spec.settings)} if spec.settings else set()
        assert keys == fields, name


def test_misspelled_or_mistyped_method_setting_is_an_error(tmp_path):
    from tgp.errors import ConfigError

    spec = METHODS["imp"]
    cfg = compose_cfg(["experiment=smoke", "method=imp"], tmp_path)
    spec.check_settings(cfg.method)
    bad = OmegaConf.create({**OmegaConf.to_container(cfg.method, resolve=True), "rtae": 0.3})
    with pytest.raises(ConfigError, match=r"method.rtae.*no setting 'rtae'"):
        spec.check_settings(bad)
    bad = OmegaConf.create({**OmegaConf.to_container(cfg.method, resolve=True), "rate": "fast"})
    with pytest.raises(ConfigError, match="method.rate"):
        spec.check_settings(bad)


def test_measured_sparsity_with_exclude_is_exact_over_the_masked_weights(tmp_path):
    from tgp.pipeline import run_pipeline

    cfg = compose_cfg(["experiment=smoke", "pruning.sparsity=0.9", "pruning.exclude=[conv1,fc]"], tmp_path)
    row = run_pipeline(cfg, tmp_path / "run")
    report = read_json(tmp_path / "run" / "prune" / "sparsity_report.json")
    n = report["prunable"]["total"]
    assert row["measured_sparsity"] == round(0.9 * n) / n
    assert abs(row["measured_sparsity"] - 0.9) < 1 / n
    assert row["sparsity_all"] < row["measured_sparsity"]  # excluded layers, biases and norms are dense
    assert read_json(tmp_path / "run" / "retrain" / "result.json")["kind"] == "retrain"
