"""Write small fake datasets in the REAL on-disk formats (for tests; no network needed).

The writers live in the package (:mod:`tgp.data.fake_trees`), which the GPU check uses too."""

from tgp.data.fake_trees import write_fake_cifar, write_fake_tiny_imagenet  # noqa: F401
