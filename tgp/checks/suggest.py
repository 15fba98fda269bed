"""Advice for a key that does not exist: "did you mean" and "which options have it".

Two rules keep the advice right. A close key is looked for among the settings of the node the key
is under (``method.rate`` among the chosen method's settings, compared by their last part, so a
shared prefix such as ``method.`` does not make ``method.name`` look like ``method.rate``); only when
that node does not exist either (``prunning.sparsity``) among every dotted name. And a key that the
chosen option of a config group lacks but other options have (``method=tgp method.rate=0.3``,
``data=digits data.loader=device``) is answered with those options, found by composing each of them.
"""

from __future__ import annotations

import difflib

from omegaconf import DictConfig, OmegaConf

# How a group's options are called in a sentence ("the imp method", "the digits dataset").
_NOUNS = {"method": "method", "data": "dataset", "model": "model", "teacher": "teacher", "trainer": "trainer",
          "distill": "distillation loss", "optimizer": "optimizer", "logger": "logger"}
_NOT_SETTINGS = ("_target_",)  # what a node builds, not a setting a user changes


def close(word: str, candidates, cutoff: float = 0.6) -> str | None:
    """The candidate most like ``word`` (difflib ratio ≥ ``cutoff``), or None."""
    match = difflib.get_close_matches(str(word), list(candidates), n=1, cutoff=cutoff)
    return match[0] if match else None


def setting_names(cfg: DictConfig | None, key: str) -> list[str]:
    """Every dotted key of the config (Hydra's own only when ``key`` is one of them)."""
    if cfg is None:
        return []
    container = OmegaConf.to_container(cfg, resolve=False)
    if not key.startswith("hydra"):
        container.pop("hydra", None)
    names: list[str] = []

    def walk(node, prefix):
        for k, v in node.items():
            name = f"{prefix}{k}"
            names.append(name)
            if isinstance(v, dict):
                walk(v, f"{name}.")

    walk(container, "")
    return names


def nearest_key(key: str, cfg: DictConfig | None) -> str | None:
    """A key of ``cfg`` close to ``key``: a sibling when ``key``'s parent node exists, else any dotted name."""
    if cfg is None:
        return None
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else None
    if isinstance(node, DictConfig):
        hit = close(leaf, [k for k in node.keys() if k not in _NOT_SETTINGS])
        return f"{parent}.{hit}" if hit else None
    return close(key, setting_names(cfg, key))


def group_of(key: str, repository) -> tuple[str, str] | None:
    """``(group, key below it)`` for a key inside a config group's node (``data.loader`` → ``("data", "loader")``)."""
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        group = "/".join(parts[:i])
        if repository.group_exists(group):
            return group, ".".join(parts[i:])
    return None


def options_with(group: str, below: str, config_name: str, loader) -> list[str]:
    """The options of ``group`` whose composed node has ``below`` (one compose per option; error path only)."""
    from hydra import compose

    owners = []
    for option in (o for o in loader.get_group_options(group) if not o.startswith("_")):
        try:
            cfg = compose(config_name=config_name, overrides=[f"{group}={option}"], return_hydra_config=True)
        except Exception:  # noqa: BLE001 - an option that does not compose alone has nothing to offer
            continue
        if OmegaConf.select(cfg, f"{group.replace('/', '.')}.{below}", default=_ABSENT) is not _ABSENT:
            owners.append(option)
    return owners


_ABSENT = object()


def unknown_key_advice(key: str, value_text: str | None, cfg: DictConfig | None, config_name: str, loader,
                       prefix: str = "") -> tuple[str | None, str]:
    """``(problem, fix)`` for a key the composed config lacks; ``problem`` is None when no group explains it.

    When ``key`` lies inside a config group's node and other options of that group have it, the
    problem names the chosen option and the fix names the options that have the key; otherwise the
    fix offers a close key of the chosen option (``did you mean ...?``), or none.
    """
    place = group_of(key, loader.repository)
    if place is not None and cfg is not None:
        group, below = place
        chosen = OmegaConf.select(cfg, f"hydra.runtime.choices.{group}", default=None)
        owners = [o for o in options_with(group, below, config_name, loader) if o != chosen]
        if chosen is not None and owners:
            noun = _NOUNS.get(group, f"{group} option")
            listed = ", ".join(owners)
            one = f"{group}={owners[0]}" + (f" (or {', '.join(owners[1:])})" if len(owners) > 1 else "")
            return (f"the {chosen} {noun} ({group}={chosen}) has no setting {below!r}; {key} is a setting of the "
                    f"{noun}{'s' if len(owners) > 1 else ''} {listed} only.",
                    f"choose {one} to set {prefix}{key}, or drop it.")
    hit = nearest_key(key, cfg)
    if hit is None:
        return None, "drop it; " if prefix == "~" else ""
    return None, f"did you mean {prefix}{hit}{'' if value_text is None else '=' + value_text}? "
