"""LightningDataModules for the datasets used in the experiments."""

from tgp.data.base import ImageClassificationDataModule
from tgp.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from tgp.data.digits import DigitsDataModule
from tgp.data.synthetic import SyntheticDataModule
from tgp.data.tiny_imagenet import TinyImageNetDataModule

__all__ = [
    "ImageClassificationDataModule",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "TinyImageNetDataModule",
    "DigitsDataModule",
    "SyntheticDataModule",
]
