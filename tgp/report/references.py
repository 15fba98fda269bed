"""What our numbers are compared with: published reference numbers (``experiments/reference/*.yaml``),
and the model labels that say which width a number is about (``resnet18-w8`` vs the standard width)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import yaml

from tgp.resources import config_dir

log = logging.getLogger("tgp")

CONF_DIR = config_dir()


def as_width(value) -> int | None:
    """A model width as an int, None when it is not one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def model_label(name, width) -> str | None:
    """``resnet18`` at width 8 → ``resnet18-w8`` (the width is what tells the tiny and the full model
    apart); the name alone when the width is unknown."""
    if name is None:
        return None
    width = as_width(width)
    if width is None or re.search(r"-w\d+$", str(name)):
        return str(name)
    return f"{name}-w{width}"


def standardas_width(name) -> int | None:
    """The width of ``conf/model/<name>.yaml`` (the model's standard width, e.g. 64 for resnet18)."""
    path = CONF_DIR / "model" / f"{name}.yaml"
    try:
        return as_width((yaml.safe_load(path.read_text()) or {}).get("width"))
    except (OSError, yaml.YAMLError, AttributeError):
        return None


def same_model(published: str, model: str) -> bool:
    """Whether a published number for ``published`` (e.g. ``resnet18``, always at its standard width)
    is about our ``model`` (``resnet18`` with unknown width, or ``resnet18-w64``; never ``resnet18-w8``)."""
    return str(model) == str(published) or str(model) == model_label(published, standardas_width(published))


def load_references(folder: str | Path | None) -> list[dict]:
    """Entries of ``experiments/reference/*.yaml`` that carry a number and a citation.

    Entries with ``top1: null`` are placeholders and skipped; a number without an arXiv id and a
    table is skipped with a warning (we only draw numbers we can point to).
    """
    if folder is None:
        return []
    folder = Path(folder)
    refs = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            log.warning("reference file %s is not valid YAML (%s): skipped", path, e)
            continue
        source = doc.get("source") or path.stem
        for e in doc.get("entries") or []:
            if not isinstance(e, dict) or e.get("top1") is None:
                continue
            cite = e.get("citation") or {}
            if not cite.get("arxiv") or not cite.get("table"):
                log.warning("%s: entry %s has a number but no citation (arxiv + table): skipped", path.name, e)
                continue
            top1 = float(e["top1"])
            refs.append({
                "source": source, "method": str(e["method"]), "dataset": str(e["dataset"]), "model": str(e["model"]),
                "sparsity": float(e["sparsity"]), "top1": top1 / 100 if top1 > 1 else top1,  # percent or fraction
                "arxiv": str(cite["arxiv"]), "table": str(cite["table"]),
            })
    return refs
