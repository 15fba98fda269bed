"""Packages of the wheel: tgp's own and the node launcher (hydra_plugins is a namespace package: an
__init__.py there would hide every other installed Hydra plugin), plus the config tree and the
reference numbers, which live at the top level of the repository and ship inside the package
(package-dir in pyproject.toml maps them)."""

from setuptools import find_namespace_packages, setup

found = find_namespace_packages(include=["tgp", "tgp.*", "hydra_plugins", "hydra_plugins.*"], exclude=["*__pycache__*"])
setup(packages=[*found, "tgp.conf", "tgp.reference"])
