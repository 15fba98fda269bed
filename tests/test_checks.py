"""Every bad setting is refused before any work: exit code 2, one paragraph naming the setting and the fix,
no traceback, and no stage folder.

Two layers: :func:`tgp.checks.precheck` (the command line against the config tree, output folders, the
device; before Hydra creates anything) and :func:`tgp.checks.validate_job` (the method's stages and
epoch counts, the mask file, the batch split; before the first stage). Each CLI call here fails
before training, so it costs the start-up of the process only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT, compose_cfg, run_cli
from tgp.errors import CheckpointMismatchError, ConfigError, TGPError


def assert_refused(proc, tmp_path: Path, *needles: str, nothing_written: bool = False) -> None:
    """Exit 2, our one paragraph, no stage folder (and with ``nothing_written``, not even a run folder)."""
    err = proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}\n{err[-3000:]}"
    assert "Traceback" not in err and "To append to your config use" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("tgp: error: ")]
    assert len(lines) == 1 and " Fix: " in lines[0], err[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    stages = tmp_path / "stages"
    assert not stages.exists() or not any(stages.iterdir()), list(stages.iterdir())
    assert not (tmp_path / "run" / "teacher").exists() and not list(tmp_path.rglob("result.json"))
    if nothing_written:
        assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def run_bare(args: list[str], tmp_path: Path):
    """Like ``run_cli``, but ``args`` come last (so they win) and no ``hydra.run.dir`` is added."""
    import subprocess

    flags = [a for a in args if a == "-m"]
    cmd = [sys.executable, "-m", "tgp.run", *flags, f"paths.log_dir={tmp_path}", "progress_bar=false",
           *[a for a in args if a != "-m"]]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WANDB_MODE": "offline"})


# -- before Hydra: the command line, the output folders, the device ---------------------------------
@pytest.mark.parametrize("args, needles", [
    (["method=foo"], ["method='foo'", "ce_grad", "tgp", "imp"]),
    (["model=foo"], ["model='foo'", "resnet20_tiny"]),
    (["model=resnet20_tin"], ["model='resnet20_tin'", "did you mean model=resnet20_tiny?"]),
    (["prunning.sparsity=0.5"], ["prunning.sparsity=0.5", "did you mean pruning.sparsity=0.5?", "closed"]),
    (["pruning.sparsty=0.5"], ["pruning.sparsty=0.5", "did you mean pruning.sparsity=0.5?"]),
    (["+prunning.sparsity=0.5"], ["prunning.sparsity=0.5", "did you mean pruning.sparsity=0.5?", "nothing in tgp reads"]),
    (["pruning.sparsity=[0.5"], ["pruning.sparsity='[0.5'", "cannot parse"]),
    (["pruning.sparsity=0.5,0.9"], ["pruning.sparsity='0.5,0.9'", "-m"]),
    (["-m", "method=tgp,foo", "pruning.sparsity=0.5,0.9"], ["method='foo'", "ce_grad"]),
])
def test_command_line_refused_before_hydra(args, needles, tmp_path):
    assert_refused(run_cli(["experiment=smoke", *args] if args[0] != "-m" else [*args, "experiment=smoke"],
                           tmp_path, check=False), tmp_path, *needles, nothing_written=True)


def test_unwritable_folders(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    cases = [
        (["hydra.run.dir=/proc/nope"], "hydra.run.dir='/proc/nope'"),
        ([f"hydra.run.dir={afile}/run"], "is a file"),
        (["paths.stage_store=/proc/nope"], "paths.stage_store='/proc/nope'"),
        (["-m", "paths.log_dir=/proc/nope", "pruning.sparsity=0.5,0.9"], "paths.log_dir='/proc/nope'"),
    ]
    if os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        cases.append(([f"paths.stage_store={ro}/stages"], "not writable"))
    for args, needle in cases:
        proc = run_bare(["experiment=smoke", *args], tmp_path)
        assert_refused(proc, tmp_path, needle, nothing_written=True)
    assert not Path("/proc/nope").exists() and not (tmp_path / "sweeps").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the check is for machines without CUDA")
@pytest.mark.parametrize("trainer, fix", [("ddp", "trainer=ddp_sim"), ("gpu", "trainer=cpu")])
def test_gpu_trainer_without_cuda(trainer, fix, tmp_path):
    proc = run_cli(["experiment=smoke", f"trainer={trainer}"], tmp_path, check=False)
    assert_refused(proc, tmp_path, "trainer.accelerator='gpu'", fix, nothing_written=True)


def test_precheck_leaves_good_command_lines_alone(tmp_path, monkeypatch):
    from tgp.run import precheck

    monkeypatch.chdir(tmp_path)
    for argv in (["experiment=smoke", "pruning.sparsity=0.7", f"hydra.run.dir={tmp_path}/r"],
                 ["--cfg", "job", "hydra.run.dir=/proc/nope", "+trainer.max_time=00:00:10:00"],  # --cfg needs no folder
                 ["-m", "hydra/launcher=slurm", "trainer=ddp", "method=tgp,imp", "pruning.sparsity=0.5,0.9"],
                 ["-m", "sweep=ladder_a", "method=glob(*)", "++trainer.strategy=ddp_spawn"],
                 ["--help"], ["--version"]):
        precheck(argv)
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "r").exists()  # a check writes nothing


def test_sweep_option_without_the_swept_key_is_named(tmp_path, monkeypatch):
    from tgp.run import precheck

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"method.rate=0.3: \(in the sweep's jobs with method=tgp\)"):
        precheck(["-m", "method=tgp,imp", "method.rate=0.3"])
    with pytest.raises(TGPError, match=r"^~pruning.sparsty: .*did you mean ~pruning.sparsity\?"):
        precheck(["~pruning.sparsty"])


def test_cfg_with_multirun_is_one_paragraph_not_a_traceback(tmp_path):
    proc = run_cli(["-m", "--cfg", "job", "experiment=smoke", "pruning.sparsity=0.5,0.8"], tmp_path, check=False)
    assert_refused(proc, tmp_path, "--cfg='job'", "cannot be combined with -m", "Fix: drop -m", nothing_written=True)


# -- before the first stage: validate_job ------------------------------------------------------------
@pytest.mark.parametrize("args, needles", [
    (["retrain.epochs=-1"], ["retrain.epochs=-1", "at least 1"]),
    (["teacher.epochs=-1"], ["teacher.epochs=-1", "teacher.checkpoint"]),
    (["stop_after=prun"], ["stop_after='prun'", "teacher, kd_pretrain, prune, retrain", "did you mean stop_after=prune?"]),
    (["schedule.kind=cosin"], ["schedule.kind='cosin'", "cosine, multistep, linear, constant"]),
    (["schedule.warmup_epochs=-1"], ["schedule.warmup_epochs=-1", ">= 0"]),
])
def test_job_settings_refused_before_the_first_stage(args, needles, tmp_path):
    # Refused in the job, before it writes anything: not even the run folder Hydra made for it stays.
    assert_refused(run_cli(["experiment=smoke", *args], tmp_path, check=False), tmp_path, *needles,
                   nothing_written=True)


def test_mask_of_another_model_refused_before_training(tmp_path):
    from tgp.models import build_model
    from tgp.pruning.mask import prunable_parameters, save_mask

    other = build_model("resnet18", num_classes=10, in_channels=1, width=8)
    save_mask({n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(other).items()}, tmp_path / "m.pt")
    proc = run_cli(["experiment=smoke", f"pruning.mask={tmp_path}/m.pt"], tmp_path, check=False)
    assert_refused(proc, tmp_path, "pruning.mask=", "does not fit", nothing_written=True)


@pytest.mark.parametrize("model, names", [
    ("resnet20", ["conv1", "layers.1.1.conv2", "fc", "'layers.2.*'"]),
    ("vgg16", ["features.0", "fc", "'features.*'"]),
])
def test_exclude_advice_names_real_modules(model, names):
    import fnmatch

    from tgp.models import build_model
    from tgp.pruning.mask import prunable_parameters

    net = build_model(model, num_classes=10, in_channels=1, width=4)
    with pytest.raises(ConfigError, match=r"^pruning.exclude='layer4\.\*': ") as info:
        prunable_parameters(net, ["layer4.*"])
    fix = str(info.value).split(" Fix: ")[1]
    for name in names:
        assert name in fix, fix
    modules = [n for n, _ in net.named_modules()]
    assert fnmatch.filter(modules, names[-1].strip("'")) and "layer4" not in fix


# -- validate_job in process, with the registered specs -----------------------------------------------
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """``compose(method)``: the smoke config with that method, and an untrained smoke student."""
    from conftest import compose_cfg
    from tgp.models import build_model

    where = tmp_path_factory.mktemp("cfg")
    return (lambda method="tgp": compose_cfg(["experiment=smoke", f"method={method}"], where),
            build_model("resnet20", num_classes=10, in_channels=1, width=4))


def with_(cfg, **dotted):
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    for key, value in dotted.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, force_add=True)
    return cfg


@pytest.mark.parametrize("method, changes, match", [
    ("tgp", {"kd_pretrain__epochs": 0}, r"kd_pretrain.epochs=0"),
    ("tgp", {"teacher__epochs": 2.5}, r"teacher.epochs=2.5: .*whole number"),
    ("imp", {"kd_pretrain__epochs": 0}, r"kd_pretrain.epochs=0: .*method.epochs_per_round"),
    ("imp", {"stop_after": "imp_round"}, r"imp_round_NN.*did you mean stop_after=imp_round_01"),
    ("tgp", {"pruning__sparsity": 1.0}, r"pruning.sparsity=1.0"),
    ("tgp", {"trainer__strategy": "ddp_spawn", "trainer__devices": 3, "data__batch_size": 32}, r"data.batch_size=32"),
    ("sdp", {"pruning__mask": "x.pt"}, r"pruning.mask='x.pt': method sdp computes its own masks"),
    ("tgp", {"pruning__exclude": "layers.2.*"}, r"pruning.exclude='layers.2.\*': must be a list.*\[layers.2.\*\]"),
])
def test_validate_job(smoke, method, changes, match):
    from tgp.checks import validate_job
    from tgp.methods import get_method

    compose, student = smoke
    cfg, spec = compose(method), get_method(method)
    validate_job(with_(cfg), spec, None, student)  # the smoke config itself passes
    with pytest.raises(ConfigError, match=match):
        validate_job(with_(cfg, **changes), spec, None, student)


def test_validate_job_accepts_stop_after_a_round_and_a_loaded_teacher(smoke):
    from tgp.checks import validate_job
    from tgp.methods import get_method

    compose, student = smoke
    validate_job(with_(compose(), teacher__epochs=0, teacher__checkpoint="t.pt", stop_after="prune"), get_method("tgp"), None,
                 student)
    assert get_method("imp").has_stage("imp_round_03")


def test_mask_file_checks(smoke, tmp_path):
    from tgp.checks.job import check_mask
    from tgp.methods import get_method

    compose, student = smoke
    cfg = compose()
    (tmp_path / "junk.pt").write_text("junk")
    for name, match in (("nope.pt", "no such file"), ("junk.pt", "cannot be read as a mask")):
        with pytest.raises(CheckpointMismatchError, match=rf"^pruning.mask='[^']*{name}': .*{match}.* Fix: "):
            check_mask(with_(cfg, pruning__mask=str(tmp_path / name)), get_method("tgp"), student)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_one_shot_and_accepts_mask_are_separate_properties(smoke, tmp_path):
    """``one_shot`` decides pruning.sanity / keep_class_rows, ``accepts_mask`` decides pruning.mask."""
    import dataclasses

    from tgp.checks.job import check_keep_class_rows, check_mask, check_sanity
    from tgp.methods import get_method
    from tgp.pruning.mask import prunable_parameters, save_mask

    compose, student = smoke
    cfg = compose()
    save_mask({n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(student).items()},
              tmp_path / "m.pt")
    masked, sanity, rows = (with_(cfg, pruning__mask=str(tmp_path / "m.pt")), with_(cfg, pruning__sanity="invert"),
                            with_(cfg, pruning__keep_class_rows=True))
    takes_mask_only = dataclasses.replace(get_method("tgp"), name="mask_only", one_shot=False)
    check_mask(masked, takes_mask_only, student)
    with pytest.raises(ConfigError, match=r"^pruning.sanity='invert': method mask_only does not prune in one shot"):
        check_sanity(sanity, takes_mask_only)
    with pytest.raises(ConfigError, match=r"^pruning.keep_class_rows=True: method mask_only makes its masks"):
        check_keep_class_rows(rows, takes_mask_only)
    one_shot_only = dataclasses.replace(get_method("tgp"), name="own_mask", accepts_mask=False)
    check_sanity(sanity, one_shot_only)
    check_sanity(with_(cfg, pruning__sanity="reinit"), one_shot_only)  # a student built from its config
    pretrained = OmegaConf.merge(with_(cfg, pruning__sanity="reinit"), {"model": {"pretrained": "some/checkpoint"}})
    with pytest.raises(ConfigError, match=r"^pruning.sanity='reinit': the student starts from pretrained weights"):
        check_sanity(pretrained, one_shot_only)
    check_keep_class_rows(rows, one_shot_only)
    with pytest.raises(ConfigError, match=r"^pruning.mask='[^']*m.pt': method own_mask computes its own masks"):
        check_mask(masked, one_shot_only, student)


# -- refusals are sentences: exit 2, the first line says it, no traceback on the console ---------------
def first_line(proc) -> str:
    """The console's first line (stderr): a refusal is one paragraph, so this is all of it."""
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    console = proc.stdout + proc.stderr
    assert "Traceback" not in console, console[-3000:]
    lines = proc.stderr.splitlines()
    assert lines and lines[0].startswith("tgp: error: ") and " Fix: " in lines[0] and len(lines) == 1, proc.stderr
    return lines[0]


def run_hidden(modules: list[str], args: list[str], tmp_path: Path):
    """``tgp-run args`` in a fresh process where ``modules`` cannot be imported (as if their package were not
    installed: ``sys.modules[name] = None`` makes ``import`` fail and ``find_spec`` return None, and Hydra's
    plugin scan skips such a module)."""
    import subprocess

    code = ("import sys\n"
            f"for name in {modules!r}:\n    sys.modules[name] = None\n"
            "from tgp.run import main\nsys.argv = ['tgp-run', *sys.argv[1:]]\nmain()\n")
    return subprocess.run([sys.executable, "-c", code, *args, f"paths.log_dir={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "WANDB_MODE": "offline"})


BROKEN_YAML = "name: mine\nregime: [pskd, dlb\nscore_bn: batch\n"  # the list is never closed


@pytest.mark.parametrize("where", ["--config-dir", "hydra.searchpath", "ours"])
def test_yaml_syntax_error_names_the_file_and_the_line(where, tmp_path):
    import shutil

    if where == "ours":  # a copy of conf/ with one of our files broken, as the primary config tree
        conf = tmp_path / "conf"
        shutil.copytree(ROOT / "conf", conf)
        broken = conf / "pruning" / "default.yaml"
        broken.write_text(broken.read_text().replace("sparsity: 0.9", "sparsity: [0.9", 1))
        args = [f"--config-path={conf}", "experiment=smoke"]
    else:
        broken = tmp_path / "extra" / "method" / "mine.yaml"
        broken.parent.mkdir(parents=True)
        broken.write_text(BROKEN_YAML)
        extra = (["--config-dir", str(broken.parents[1])] if where == "--config-dir"
                 else [f"hydra.searchpath=[file://{broken.parents[1]}]"])
        args = [*extra, "experiment=smoke", "method=mine"]
    line = first_line(run_cli(args, tmp_path, check=False))
    assert line.startswith(f"tgp: error: {broken}, line ") and "not valid YAML" in line, line
    row = int(line.split(", line ")[1].split(":")[0])
    assert row in (2, 3), line  # the unclosed bracket (line 2), found where the next line starts
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, start", [
    (["seed=abc"], "seed='abc': must be a whole number"),
    (["progress_bar=maybe"], "progress_bar='maybe': must be true or false"),
    (["verbose=2"], "verbose=2: must be true or false"),
    (["channels_last=nhwc"], "channels_last='nhwc': must be auto, true or false"),
    (["stop_after=3"], "stop_after=3: must be a stage name or null"),
    (["-m", "seed=0,abc"], "seed='abc': must be a whole number"),  # a swept value the composed job does not hold
])
def test_wrongly_typed_top_level_values(args, start, tmp_path):
    line = first_line(run_bare(["experiment=smoke", *args], tmp_path))  # args last: run_cli's progress_bar=false
    assert line.startswith(f"tgp: error: {start}"), line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "sweeps").exists()


@pytest.mark.parametrize("key", ["seed", "progress_bar", "verbose", "compile", "channels_last", "stop_after", "name",
                                 "compile_mode", "ckpt_path", "tags", "extras.print_config", "extras.ignore_warnings"])
def test_each_top_level_value_has_its_type(key, tmp_path):
    from tgp.checks.values import check_value, check_values

    cfg = compose_cfg(["experiment=smoke"], tmp_path)
    check_values(cfg)  # the defaults pass
    with pytest.raises(ConfigError, match=rf"^{key}=\{{'a': 1\}}: must be .*; this is a mapping\. Fix: use e\.g\. "):
        check_value(key, {"a": 1})


def test_a_key_of_other_methods_names_them(tmp_path):
    line = first_line(run_cli(["experiment=smoke", "method=tgp", "method.rate=0.3"], tmp_path, check=False))
    assert line.startswith("tgp: error: method.rate=0.3: the tgp method (method=tgp) has no setting 'rate'"), line
    assert "colt, imp only" in line and "method=colt (or imp)" in line and "method.name" not in line, line


def test_a_key_of_other_datasets_names_them(tmp_path):
    import yaml

    line = first_line(run_cli(["experiment=smoke", "data.loader=device"], tmp_path, check=False))
    assert line.startswith("tgp: error: data.loader='device': the digits dataset (data=digits) has no setting"), line
    owners = sorted(p.stem for p in (ROOT / "conf" / "data").glob("*.yaml") if "loader" in yaml.safe_load(p.read_text()))
    assert len(owners) >= 3 and f"datasets {', '.join(owners)} only" in line and "data.augment" not in line, line


def test_did_you_mean_stays_within_the_chosen_option(tmp_path, monkeypatch):
    from tgp.checks.precheck import precheck

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^method.rat=0.3: .* Fix: did you mean method.rate=0.3\?"):
        precheck(["method=imp", "method.rat=0.3"])
    with pytest.raises(ConfigError, match=r"^data.augmnt=False: .* Fix: did you mean data.augment=False\?"):
        precheck(["data.augmnt=false"])


def test_devices_without_a_spawning_strategy_names_the_devices(tmp_path):
    line = first_line(run_cli(["experiment=smoke", "trainer.devices=3"], tmp_path, check=False))
    assert line.startswith("tgp: error: trainer.devices=3: 3 devices with trainer.strategy=auto"), line
    assert "Fix: use trainer.devices=1" in line and "trainer=ddp_sim trainer.devices=3" in line, line


@pytest.mark.parametrize("hidden, args, extra", [
    (["optuna", "hydra_plugins.hydra_optuna_sweeper"], ["hparams_search=tgp_optuna", "experiment=smoke"], "optuna"),
    (["submitit", "hydra_plugins.hydra_submitit_launcher"],
     ["-m", "hydra/launcher=node", "experiment=smoke", "seed=0,1"], "cluster"),
])
def test_a_missing_extra_is_named(hidden, args, extra, tmp_path):
    line = first_line(run_hidden(hidden, args, tmp_path))
    choice = args[0] if args[0] != "-m" else args[1]
    assert line.startswith(f"tgp: error: {choice.split('=')[0]}='{choice.split('=')[1]}': {choice} needs "), line
    assert f"pip install 'tgp[{extra}]'" in line, line
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "runs").exists()


# -- a refusal writes nothing into an existing run folder ----------------------------------------------
def folder_digest(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (through the stage links) by relative name: its bytes' SHA-1."""
    import hashlib

    out = {}
    for dirpath, _, files in os.walk(folder, followlinks=True):
        for name in files:
            path = Path(dirpath) / name
            out[str(path.relative_to(folder))] = hashlib.sha1(path.read_bytes()).hexdigest()
    return out


def test_a_refused_command_leaves_a_finished_run_as_it_was(tmp_path):
    from tgp.report.jobs import find_jobs

    base = ["-m", "experiment=smoke", f"paths.stage_store={tmp_path / 'stages'}", "name=refuse"]
    run_cli([*base, "seed=0"], tmp_path)
    sweep = tmp_path / "sweeps" / "refuse"
    (finished,) = [p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")]
    before = folder_digest(finished)
    assert {"metrics.json", "mask.pt", "student_sparse.pt", ".hydra/config.yaml", "run.log"} <= set(before)
    # The same folder again (data.num_workers is not part of its name), with a setting the job refuses:
    # as one run (its folder given), and in a sweep that adds a job (the finished one is skipped).
    single = run_bare(["experiment=smoke", "name=refuse", "seed=0", f"paths.stage_store={tmp_path / 'stages'}",
                       f"hydra.run.dir={finished}", "data.num_workers=-1"], tmp_path)
    assert first_line(single).startswith("tgp: error: data.num_workers=-1: must be an integer >= 0")
    sweep_proc = run_cli([*base, "seed=0,1", "data.num_workers=-1"], tmp_path, check=False)
    assert sweep_proc.returncode == 2, sweep_proc.stderr[-2000:]  # the refused job's exit code is the sweep's
    assert folder_digest(finished) == before  # names and bytes: nothing written, appended or rewritten
    jobs = find_jobs(sweep)
    assert [Path(r["run_dir"]) for r in jobs.ok] == [finished]
    (failed,) = jobs.failed  # the new job's refusal is recorded in its own folder, and the sweep went on
    assert "data.num_workers=-1" in (Path(failed["run_dir"]) / "error.txt").read_text()
    assert (failed["method"], failed["seed"]) == ("tgp", 1)  # the report names the refused job
    assert "job done already" in sweep_proc.stdout + sweep_proc.stderr

