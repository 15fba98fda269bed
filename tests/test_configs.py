"""Every config file composes; the CLI behaves as Hydra users expect."""

import subprocess
import sys

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import CONF, ROOT, compose_cfg


def names(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("experiment", names("experiment"))
def test_every_experiment_composes(experiment, tmp_path):
    cfg = compose_cfg([f"experiment={experiment}"], tmp_path)
    assert cfg.method.name and cfg.model._target_ and cfg.data._target_
    OmegaConf.to_container(cfg.data, resolve=True)  # interpolations resolve


@pytest.mark.parametrize("group", ["method", "trainer", "logger", "data", "model", "teacher", "distill", "optimizer", "sweep"])
def test_every_option_of_every_group_composes(group, tmp_path):
    for option in names(group):
        compose_cfg([f"{group}={option}"], tmp_path)


@pytest.mark.parametrize("model", names("model"))
def test_model_configs_instantiate_for_the_default_data(model, tmp_path):
    cfg = compose_cfg([f"model={model}", "model.width=8"], tmp_path)
    net = instantiate(cfg.model, num_classes=10, in_channels=1)
    assert net.fc.out_features == 10


def test_smoke_experiment_instantiates_its_datamodule(tmp_path):
    dm = instantiate(compose_cfg(["experiment=smoke"], tmp_path).data)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape[1:] == (1, 8, 8) and y.dtype.is_floating_point is False


def test_cli_help_and_cfg_job():
    help_ = subprocess.run([sys.executable, "-m", "tgp.run", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert help_.returncode == 0 and "method: ce_grad, colt, epsd" in help_.stdout
    job = subprocess.run([sys.executable, "-m", "tgp.run", "experiment=smoke", "pruning.sparsity=0.7", "--cfg", "job"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert job.returncode == 0
    cfg = OmegaConf.create(job.stdout)
    assert cfg.pruning.sparsity == 0.7 and cfg.name == "smoke"


@pytest.mark.parametrize("overrides", [[], ["experiment=demo"], ["experiment=demo_mnist5k"]], ids=["default", "demo", "demo_mnist5k"])
def test_the_dense_student_has_no_dead_weights_at_the_data_s_resolution(overrides, tmp_path):
    """A plain `python -m tgp.run` (and each demo): under 1 % of the student's prunable weights lie on
    no input→output path at the default data's input shape (e.g. taps that only ever read padding)."""
    from tgp.report.connectivity import effective_sparsity

    cfg = compose_cfg(overrides, tmp_path)
    dm = instantiate(cfg.data)
    student = instantiate(cfg.model, num_classes=dm.num_classes, in_channels=dm.in_channels)
    teacher = instantiate(cfg.teacher.net, num_classes=dm.num_classes, in_channels=dm.in_channels)
    shape = (dm.in_channels, dm.image_size, dm.image_size)
    assert effective_sparsity(student, None, shape) < 0.01
    assert effective_sparsity(teacher, None, shape) < 0.01
