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


# Image models; the Transformers (a tokenizer in their config) are instantiated in test_text_models.py.
IMAGE_MODELS = [m for m in names("model") if "tokenizer" not in OmegaConf.load(CONF / "model" / f"{m}.yaml")]


@pytest.mark.parametrize("model", IMAGE_MODELS)
def test_model_configs_instantiate_for_the_default_data(model, tmp_path):
    cfg = compose_cfg([f"model={model}", "model.width=8"], tmp_path)
    net = instantiate(cfg.model, num_classes=10, in_channels=1)
    assert net.fc.out_features == 10


def test_smoke_experiment_instantiates_its_datamodule(tmp_path):
    dm = instantiate(compose_cfg(["experiment=smoke"], tmp_path).data)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape[1:] == (1, 8, 8) and y.dtype.is_floating_point is False
    # what FLOPs and effective sparsity are measured on: a batch in the loader's format
    example = dm.example_input(4)
    assert example.shape == (4, *x.shape[1:]) and example.dtype == x.dtype


@pytest.mark.parametrize("data", names("data"))
def test_one_dataset_name_from_the_datamodule_class(data, tmp_path):
    """The run name, the metrics row (dm.name) and the report's failed jobs (dataset_name of the config)
    name a dataset alike: by its datamodule class's ``name``."""
    from hydra.utils import get_class

    from tgp.data import dataset_name
    from tgp.naming import run_name

    cfg = compose_cfg([f"data={data}"], tmp_path)
    cls = get_class(cfg.data._target_)
    expected = cfg.data.task if "task" in cfg.data else data  # a text datamodule is named after its task
    assert dataset_name(cfg.data) == cls.dataset_name_of(cfg.data) == expected
    if "task" not in cfg.data:
        assert cls.name == data
    data = expected
    assert f"-{data}-" in run_name(cfg)
    assert dataset_name({"_target_": "tgp.data.NoSuchDataModule"}) is None and dataset_name({}) is None


def test_cli_help_and_cfg_job():
    help_ = subprocess.run([sys.executable, "-m", "tgp.run", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert help_.returncode == 0 and "method: ce_grad, colt, epsd" in help_.stdout
    job = subprocess.run([sys.executable, "-m", "tgp.run", "experiment=smoke", "pruning.sparsity=0.7", "--cfg", "job"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert job.returncode == 0
    cfg = OmegaConf.create(job.stdout)
    assert cfg.pruning.sparsity == 0.7 and cfg.name == "smoke"
