"""Where tgp's data files are: the Hydra config tree and the published reference numbers.

A source checkout keeps them at the top level (``conf/``, ``experiments/reference/``, the layout of
lightning-hydra-template); a built wheel carries the same files inside the package
(``tgp/conf``, ``tgp/reference``: ``package-dir`` in ``pyproject.toml`` maps them), so an installed
tgp composes every config and draws reference lines from any directory. One copy, two places to
look: the packaged one wins where it exists.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _first(*candidates: Path) -> Path:
    return next((c for c in candidates if c.is_dir()), candidates[-1])


def config_dir() -> Path:
    """The Hydra config tree (``conf/`` of a checkout, ``tgp/conf`` of an installed wheel)."""
    return _first(_PACKAGE / "conf", _PACKAGE.parent / "conf")


def reference_dir() -> Path:
    """The published reference numbers (``experiments/reference/`` of a checkout, ``tgp/reference`` of a wheel)."""
    return _first(_PACKAGE / "reference", _PACKAGE.parent / "experiments" / "reference")


CONFIG_DIR = str(config_dir())
