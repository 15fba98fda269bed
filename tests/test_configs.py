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
    assert help_.returncode == 0 and "method: ce_grad, colt, dense, epsd" in help_.stdout
    job = subprocess.run([sys.executable, "-m", "tgp.run", "experiment=smoke", "pruning.sparsity=0.7", "--cfg", "job"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert job.returncode == 0
    cfg = OmegaConf.create(job.stdout)
    assert cfg.pruning.sparsity == 0.7 and cfg.name == "smoke"


# -- one source for each method setting -------------------------------------------------------------
def _specs():
    from tgp.methods import load_all

    return sorted(load_all().items())


@pytest.mark.parametrize("name, spec", _specs(), ids=[n for n, _ in _specs()])
def test_each_method_setting_is_written_once(name, spec):
    """The settings dataclass types method.*, conf/method/<name>.yaml gives the values: a default in the
    dataclass would be a second copy of the YAML's (see tgp.methods.registry), a YAML key without a field an
    unchecked setting, a field without a YAML key a setting without a value."""
    import dataclasses

    import yaml

    doc = yaml.safe_load((CONF / "method" / f"{name}.yaml").read_text())
    assert doc.pop("name") == name
    fields = dataclasses.fields(spec.settings) if spec.settings is not None else ()
    defaults = [f.name for f in fields if f.default is not dataclasses.MISSING
                or f.default_factory is not dataclasses.MISSING]
    assert not defaults, f"{spec.settings.__name__} writes defaults for {defaults}: keep them in conf/method/{name}.yaml"
    assert sorted(f.name for f in fields) == sorted(doc), f"conf/method/{name}.yaml against its settings dataclass"


def test_method_settings_check_names_a_missing_value_and_a_wrong_type(tmp_path):
    from tgp.errors import ConfigError
    from tgp.methods import get_method

    spec = get_method("imp")
    cfg = compose_cfg(["method=imp"], tmp_path).method
    spec.check_settings(cfg)
    without = OmegaConf.create({k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "rate"})
    with pytest.raises(ConfigError, match=r"^method.rate=None: method imp needs this setting.*conf/method/imp.yaml"):
        spec.check_settings(without)
    with pytest.raises(ConfigError, match=r"^method.max_rounds='many': wrong type"):
        spec.check_settings(OmegaConf.merge(cfg, {"max_rounds": "many"}))


@pytest.mark.parametrize("overrides", [[], ["experiment=demo"], ["experiment=demo_mnist5k"]], ids=["default", "demo", "demo_mnist5k"])
def test_the_dense_student_has_no_dead_weights_at_the_data_s_resolution(overrides, tmp_path):
    """A plain `python -m tgp.run` (and each demo): under 1 % of the student's prunable weights lie on
    no input→output path at the default data's input shape (e.g. taps that only ever read padding)."""
    from tgp.measure.connectivity import effective_sparsity

    cfg = compose_cfg(overrides, tmp_path)
    dm = instantiate(cfg.data)
    student = instantiate(cfg.model, num_classes=dm.num_classes, in_channels=dm.in_channels)
    teacher = instantiate(cfg.teacher.net, num_classes=dm.num_classes, in_channels=dm.in_channels)
    assert effective_sparsity(student, None, dm.example_input()) < 0.01
    assert effective_sparsity(teacher, None, dm.example_input()) < 0.01
