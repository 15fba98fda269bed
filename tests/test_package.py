"""tgp as a package: a built wheel in a fresh venv ships its config tree and runs from any directory,
a user's own config folder joins through Hydra's search path, and ``tgp-eval`` reproduces a run.

One wheel, one fresh venv (the pinned dependencies come from the development venv through a
``.pth`` file, nothing is downloaded) and one smoke run of the installed ``tgp-run`` from a folder
outside the repository; the ``tgp-eval`` tests evaluate that run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tgp import eval as tgp_eval

ROOT = Path(__file__).resolve().parents[1]
_TOP_LEVEL_SKIP = {".venv", ".git", "outputs", "build", "dist", "wandb", "data", "multirun", ".pytest_cache"}


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def _run(cmd, cwd, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_env())


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """``(wheel, venv)``: the working tree built into a wheel (from a copy: an in-tree build would write
    build/ into the repo) and installed with ``--no-deps`` into a fresh venv."""
    base = tmp_path_factory.mktemp("pkg")

    def ignore(folder, names):
        skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
        return skip | (_TOP_LEVEL_SKIP & set(names) if Path(folder).resolve() == ROOT else set())

    shutil.copytree(ROOT, base / "src", ignore=ignore)
    proc = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                 "-w", base / "dist", "./src"], cwd=base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel = next((base / "dist").glob("tgp-*.whl"))
    venv = base / "venv"
    assert _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base).returncode == 0
    site = _run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base)
    # The pinned dependencies, visible after the venv's own site-packages (a plain path: the
    # development venv's editable tgp finder is not activated).
    (Path(site.stdout.strip()) / "_tgp_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-deps",
                 "--no-index", wheel], cwd=base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return wheel, venv


@pytest.fixture(scope="module")
def installed_run(wheel_env, tmp_path_factory):
    """The installed ``tgp-run experiment=smoke`` in a folder outside the repo: its run directory."""
    _, venv = wheel_env
    cwd = tmp_path_factory.mktemp("elsewhere")
    proc = _run([venv / "bin" / "tgp-run", "experiment=smoke", "progress_bar=false"], cwd=cwd, timeout=600)
    assert proc.returncode == 0, f"STDOUT\n{proc.stdout[-3000:]}\nSTDERR\n{proc.stderr[-5000:]}"
    runs = list((cwd / "outputs" / "runs").iterdir())  # paths.log_dir=outputs: relative to the cwd
    assert len(runs) == 1
    return cwd, runs[0]


def test_wheel_ships_the_config_tree_and_the_console_scripts(wheel_env):
    wheel, venv = wheel_env
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"tgp/conf/config.yaml", "tgp/conf/hydra/launcher/slurm.yaml", "tgp/conf/experiment/smoke.yaml"} <= names
    # One copy in the repository (the top-level conf/ and experiments/reference/), mapped into the package
    conf = {f"tgp/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml") if "local" not in p.parts}
    assert conf <= names, sorted(conf - names)
    refs = {f"tgp/reference/{p.name}" for p in (ROOT / "experiments" / "reference").glob("*.yaml")}
    assert refs and refs <= names, sorted(refs - names)
    assert not (ROOT / "tgp" / "conf").exists()  # no second copy in the source tree
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for script in ("tgp-run", "tgp-eval", "tgp-report", "tgp-verify"):
        assert script in entry and (venv / "bin" / script).exists()
    where = _run([venv / "bin" / "python", "-c", "import tgp; print(tgp.__file__)"], cwd=venv)
    assert where.stdout.strip().startswith(str(venv)), where  # the wheel's copy, not the editable one


def test_wheel_ships_the_node_launcher_and_hydra_finds_it(wheel_env):
    wheel, venv = wheel_env
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"hydra_plugins/tgp_launcher/__init__.py", "hydra_plugins/tgp_launcher/node_launcher.py",
            "hydra_plugins/tgp_launcher/slots.py", "tgp/conf/hydra/launcher/node.yaml"} <= names
    # hydra_plugins stays a namespace package: an __init__.py would hide every other installed Hydra plugin
    assert "hydra_plugins/__init__.py" not in names
    code = ("from hydra.core.plugins import Plugins; from hydra.plugins.launcher import Launcher; "
            "import hydra_plugins.tgp_launcher.node_launcher as m; print(m.__file__); "
            "print(sorted(p.__name__ for p in Plugins.instance().discover(Launcher)))")
    found = _run([venv / "bin" / "python", "-c", code], cwd=venv)
    assert found.returncode == 0, found.stderr[-3000:]
    where, launchers = found.stdout.strip().splitlines()
    assert where.startswith(str(venv)), where  # the wheel's copy
    assert "NodeLauncher" in launchers and "LocalLauncher" in launchers  # beside submitit's, not instead of them


def test_search_path_adds_a_user_config_folder(wheel_env, tmp_path):
    _, venv = wheel_env
    (tmp_path / "my_conf" / "experiment").mkdir(parents=True)
    (tmp_path / "my_conf" / "experiment" / "my_recipe.yaml").write_text(
        "# @package _global_\ndefaults:\n  - smoke\nname: my_recipe\npruning:\n  sparsity: 0.7\n")
    proc = _run([venv / "bin" / "tgp-run", f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "experiment=my_recipe",
                 "--cfg", "job"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "name: my_recipe" in proc.stdout and "sparsity: 0.7" in proc.stdout
    assert "limit_train_batches: 3" in proc.stdout  # the packaged experiment=smoke it extends
    bad = _run([venv / "bin" / "tgp-run", "experiment=my_recipe", "--cfg", "job"], cwd=tmp_path)  # not searched
    assert bad.returncode == 2 and "my_recipe" in bad.stderr


EVERY_GROUP = """
import json
from hydra import compose, initialize_config_dir
from tgp.naming import register_resolvers
from tgp.report.references import load_references
from tgp.resources import config_dir, reference_dir

register_resolvers()
conf = config_dir()
composed, failed = [], []
with initialize_config_dir(str(conf), version_base="1.3"):
    for group in sorted(p for p in conf.iterdir() if p.is_dir() and p.name not in ("hydra", "local")):
        for option in sorted(group.glob("*.yaml")):
            override = f"{group.name}={option.stem}"
            try:
                compose("config", overrides=[override], return_hydra_config=True)
                composed.append(override)
            except Exception as e:
                failed.append(f"{override}: {type(e).__name__}: {e}")
refs = reference_dir()
print(json.dumps({"conf": str(conf), "composed": composed, "failed": failed, "references": str(refs),
                  "reference_files": sorted(p.name for p in refs.glob("*.yaml")), "loaded": load_references(refs)}))
"""


def test_the_installed_wheel_composes_every_config_option_and_reads_its_reference_files(wheel_env, tmp_path):
    _, venv = wheel_env
    proc = _run([venv / "bin" / "python", "-c", EVERY_GROUP], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = sorted(f"{g.name}={o.stem}" for g in (ROOT / "conf").iterdir() if g.is_dir() and g.name not in ("hydra", "local")
                      for o in g.glob("*.yaml"))
    assert got["failed"] == [] and sorted(got["composed"]) == expected and len(expected) > 50
    assert got["conf"].startswith(str(venv)) and got["references"].startswith(str(venv))  # the wheel's copies
    assert got["reference_files"] == sorted(p.name for p in (ROOT / "experiments" / "reference").glob("*.yaml"))
    # the shipped files hold placeholders only (no number without its citation): none is drawn
    assert got["loaded"] == []


def test_no_file_in_the_repository_points_outside_it():
    """Every tracked text file: no path into the workplace around the repository, and every relative
    Markdown link resolves to a file or folder inside it."""
    import re

    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    outside = ("../" + "shared", "METHOD" + ".md", "/" + "work/")
    link = re.compile(r"\]\(([^)\s]+)\)")
    problems = []
    for name in files:
        path = ROOT / name
        if path.suffix not in (".md", ".py", ".yaml", ".yml", ".toml", ".txt", ".cfg", "") or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        problems += [f"{name}: {needle}" for needle in outside if needle in text]
        if path.suffix == ".md":
            for target in link.findall(text):
                if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                    continue  # a URL or an anchor on the same page
                resolved = (path.parent / target.split("#")[0]).resolve()
                if not resolved.is_relative_to(ROOT) or not resolved.exists():
                    problems.append(f"{name}: link {target}")
    assert problems == []


@pytest.mark.slow  # the installed run's folder, reported by the installed tgp-report
def test_the_installed_report_draws_reference_lines(installed_run, wheel_env, tmp_path):
    cwd, run = installed_run
    _, venv = wheel_env
    row = json.loads((run / "metrics.json").read_text())
    refs = tmp_path / "refs"
    refs.mkdir()
    # a test entry in the shipped format (not a published number: it exists only in this test's folder)
    (refs / "test_source.yaml").write_text(
        "source: test_source\nentries:\n"
        f"  - {{method: {row['method']}, dataset: {row['dataset']}, model: {row['model']}, "
        f"sparsity: {row['target_sparsity']}, top1: 50.0, citation: {{arxiv: '0000.00000', table: 'Table 0'}}}}\n")
    out = tmp_path / "report"
    proc = _run([venv / "bin" / "tgp-report", run.parent, "--references", refs, "--out", out], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (out / "report.md").read_text()
    assert "## Published reference numbers (drawn dotted in the plots)" in md
    assert f"| test_source | {row['method']} | {row['dataset']} | {row['model']} |" in md and "| 50.00 | 0000.00000 |" in md
    assert list(out.glob("*.png"))


@pytest.mark.slow  # one smoke run of the installed package (~45 s on 2 shared cores)
def test_installed_tgp_run_from_another_directory(installed_run):
    cwd, run = installed_run
    row = json.loads((run / "metrics.json").read_text())
    assert row["status"] == "ok" and Path(row["run_dir"]).resolve().is_relative_to(cwd.resolve())
    assert (run / "student_sparse.pt").is_file() and (run / "prune" / "mask.pt").is_file()


@pytest.mark.slow
def test_tgp_eval_reproduces_the_run(installed_run, wheel_env):
    cwd, run = installed_run
    _, venv = wheel_env
    proc = _run([venv / "bin" / "tgp-eval", run.relative_to(cwd), "--repeats", "5", "--batch", "16"], cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test top-1 %" in proc.stdout and "unstructured sparsity does not speed them up" in proc.stdout
    row, ran = json.loads((run / "eval.json").read_text()), json.loads((run / "metrics.json").read_text())
    assert row["top1"] == ran["top1_last"]
    assert row["measured_sparsity"] == ran["measured_sparsity"] and row["sparsity_over"] == "mask"
    assert row["effective_sparsity"] == ran["effective_sparsity"]
    assert (row["flops_dense"], row["flops_nonzero"]) == (ran["flops_dense"], ran["flops_nonzero"])
    assert row["latency_ms_dense"] > 0 and row["throughput_zeros"] > 0 and row["top5"] is None  # 10 classes


@pytest.mark.slow
def test_tgp_eval_state_dict_with_overrides_and_lightning_checkpoint(installed_run, tmp_path, capsys):
    _, run = installed_run
    ran = json.loads((run / "metrics.json").read_text())
    out = tmp_path / "sd.json"
    assert tgp_eval.main([str(run / "student_sparse.pt"), "experiment=smoke", "--no-timing", "--out", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["kind"] == "state_dict" and row["mask"] is None and row["sparsity_over"] == "conv_linear_weights"
    assert row["top1"] == ran["top1_last"] and row["measured_sparsity"] == ran["measured_sparsity"]

    out = tmp_path / "ckpt.json"
    assert tgp_eval.main([f"ckpt_path={run / 'retrain' / 'last.ckpt'}", "experiment=smoke", "--no-timing",
                          "--out", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["kind"] == "lightning_ckpt" and "mask buffers" in row["mask"]
    assert row["top1"] == ran["top1_last"] and row["measured_sparsity"] == ran["measured_sparsity"]

    with pytest.raises(SystemExit) as e:  # a checkpoint that does not fit the composed model
        tgp_eval.main([str(run / "student_sparse.pt"), "experiment=smoke", "model.width=16", "--no-timing"])
    assert e.value.code == 2
    assert "does not fit" in capsys.readouterr().err


def test_tgp_eval_missing_file_is_one_paragraph_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        tgp_eval.main([str(tmp_path / "nothing.pt")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tgp-eval: error: ckpt_path=") and "no such file" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as e:
        tgp_eval.main([])
    assert e.value.code == 2 and "nothing to evaluate" in capsys.readouterr().err
