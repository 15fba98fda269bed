"""What a benchmark measures: the (dataset, student, teacher, batch) of an experiment file.

A recipe is read from the same composed Hydra config a run would use (``experiment=<name>``),
so the bench times exactly the networks, batch, precision, data path and KD loss of that recipe.
Dataset sizes come from the data when it is on disk, from the official split sizes otherwise —
the bench itself needs no data (it times synthetic tensors of the recipe's shape).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from tgp.errors import DataNotFoundError

# The recipes of the paper's Table 2 (conf/experiment/).
TABLE2_RECIPES = ("cifar10_resnet18", "cifar100_resnet18", "tiny_imagenet_resnet18")
# Official (train, test) image counts: the bench estimates epochs of data that need not be here.
OFFICIAL_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "tiny_imagenet": (100_000, 10_000)}


@dataclass
class Recipe:
    name: str
    cfg: DictConfig  # the composed config of ``experiment=<name>``
    dataset: str
    classes: int
    channels: int
    image: int
    input_shape: tuple[int, ...]  # one example in the model's input format (the datamodule's example_input)
    batch: int
    eval_batch: int
    loader: str  # torch | device
    n_train: int
    n_val: int
    n_test: int
    sizes_from: str  # "data on disk" | "official split sizes"

    @property
    def student(self) -> str:
        return _net_label(self.cfg.model)

    @property
    def teacher(self) -> str:
        return _net_label(self.cfg.teacher.net)

    def precision(self, device: torch.device) -> str:
        """The recipe's precision on a GPU; fp32 on a CPU (bf16 autocast is slower there)."""
        return str(self.cfg.trainer.precision) if device.type == "cuda" else "32-true"

    def channels_last(self, device: torch.device) -> bool:
        value = self.cfg.channels_last
        return device.type == "cuda" if value == "auto" else bool(value)

    def student_net(self) -> torch.nn.Module:
        return instantiate(self.cfg.model, num_classes=self.classes, in_channels=self.channels)

    def teacher_net(self) -> torch.nn.Module:
        return instantiate(self.cfg.teacher.net, num_classes=self.classes, in_channels=self.channels)


def _net_label(node: DictConfig) -> str:
    return f"{node.name}-w{node.width}" if "width" in node else str(node.name)


def compose_experiment(name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The config ``tgp-run experiment=<name> <overrides>`` would run with."""
    GlobalHydra.instance().clear()
    from tgp.resources import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name="bench"):
        return compose(config_name="config", overrides=[f"experiment={name}", *overrides])


def load_recipe(name: str, batch: int | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    cfg = compose_experiment(name, overrides)
    data = {k: v for k, v in cfg.data.items() if k != "_target_"}
    dm = get_class(cfg.data._target_)(**data)
    n_train_full, n_test = OFFICIAL_SIZES.get(dm.name, (0, 0))
    try:  # exact split sizes when the data is here (and the bundled digits always are)
        dm.setup()
        n_train, n_val, n_test, sizes_from = len(dm.data_train), len(dm.data_val), len(dm.data_test), "data on disk"
    except DataNotFoundError:
        if not n_train_full:
            raise
        n_val = dm._num_val(n_train_full)
        n_train, sizes_from = n_train_full - n_val, "official split sizes"
    b = int(batch or cfg.data.batch_size)
    eb = int(batch or cfg.data.eval_batch_size or cfg.data.batch_size)
    return Recipe(
        name=name, cfg=cfg, dataset=dm.name, classes=int(dm.num_classes), channels=int(dm.in_channels),
        image=int(dm.image_size), input_shape=tuple(dm.example_input().shape[1:]), batch=b, eval_batch=eb,
        loader=str(cfg.data.get("loader", "torch")),
        n_train=n_train, n_val=n_val, n_test=n_test, sizes_from=sizes_from,
    )
