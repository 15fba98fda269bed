"""Tests for the model zoo in tgp.models (CPU, small widths)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from tgp.errors import ConfigError
from tgp.models import MODELS, available_models, build_model

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "model"
EXPECTED = {"resnet18", "resnet34", "resnet50", "resnet20", "resnet56", "vgg16", "vgg19"}
SMALL_WIDTH = 8


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_registry_lists_all_models():
    assert EXPECTED <= set(available_models())
    assert available_models() == sorted(MODELS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("size", [8, 32, 64])
@pytest.mark.parametrize("num_classes,in_channels", [(10, 3), (200, 1)])
def test_logits_shape(name, size, num_classes, in_channels):
    model = build_model(name, num_classes=num_classes, in_channels=in_channels, width=SMALL_WIDTH)
    assert model.arch == name
    assert model.num_classes == num_classes
    assert isinstance(model.fc, nn.Linear) and model.fc.out_features == num_classes
    x = torch.randn(2, in_channels, size, size)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, num_classes)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_forward_features_interface(name):
    model = build_model(name, num_classes=10, in_channels=3, width=SMALL_WIDTH).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, model.fc.in_features)
        torch.testing.assert_close(model(x), model.fc(feats))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_conv_bias_and_init(name):
    model = build_model(name, num_classes=10, width=SMALL_WIDTH)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert m.bias is None  # every conv is followed by BatchNorm
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_resnet18_param_count():
    assert n_params(build_model("resnet18", num_classes=10, width=64)) == 11_173_962
    # width=None means the standard width
    assert n_params(build_model("resnet18", num_classes=10)) == 11_173_962


def test_resnet20_param_count():
    assert abs(n_params(build_model("resnet20", num_classes=10)) - 270_000) < 10_000


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_width_scaling_reduces_params(name):
    small = n_params(build_model(name, num_classes=10, width=8))
    larger = n_params(build_model(name, num_classes=10, width=16))
    assert small < larger


def test_vgg_ceil_pool_keeps_1x1():
    pool = nn.MaxPool2d(2, 2, ceil_mode=True)
    assert pool(torch.zeros(1, 1, 1, 1)).shape == (1, 1, 1, 1)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        build_model("resnet9000", num_classes=10)
    msg = str(info.value)
    assert "model.name" in msg
    for name in EXPECTED:
        assert name in msg


def test_unknown_option_is_config_error():
    with pytest.raises(ConfigError, match="model.depth"):
        build_model("resnet18", num_classes=10, width=8, depth=3)


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_width_is_config_error(bad):
    with pytest.raises(ConfigError, match="model.width"):
        build_model("resnet18", num_classes=10, width=bad)


def test_all_expected_configs_exist():
    names = {p.stem for p in CONF_DIR.glob("*.yaml")}
    assert EXPECTED | {"resnet18_tiny", "resnet20_tiny"} <= names


# Image models; the Transformer configs (a tokenizer in them) are tested in test_text_models.py.
IMAGE_CONFIGS = [p for p in sorted(CONF_DIR.glob("*.yaml")) if "tokenizer" not in OmegaConf.load(p)]


@pytest.mark.parametrize("path", IMAGE_CONFIGS, ids=lambda p: p.stem)
def test_hydra_instantiate(path):
    cfg = OmegaConf.load(path)
    assert cfg._target_ == "tgp.models.build_model"
    assert path.read_text().startswith("#")
    model = instantiate(cfg, num_classes=10, in_channels=3)
    assert model.arch == cfg.name
    assert model.fc.out_features == 10
    if path.stem.endswith("_tiny"):
        assert cfg.width == 8
        model.eval()
        with torch.no_grad():
            assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_backward_reaches_every_parameter(name):
    model = build_model(name, num_classes=10, in_channels=3, width=SMALL_WIDTH).train()
    x = torch.randn(2, 3, 32, 32)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([1, 7]))
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
