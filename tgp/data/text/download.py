"""``data.download=true``: fetch a task through Hugging Face ``datasets`` (the optional extra
``tgp[hub]``) and write it in the task's official file layout, so one reader serves both.

Sources (ours: the copies on the Hugging Face hub of the official data): GLUE from
``nyu-mll/glue``; XGLUE's XNLI from ``facebook/xnli`` (its English ``train`` is the MultiNLI
training set XGLUE ships as ``multinli.train.en.tsv``) and PAWS-X from
``google-research-datasets/paws-x``. Columns the hub copies lack (MNLI's parse trees, MRPC's and
QQP's ids) are written empty or as running indices; the loader does not read them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from tgp.data.text import formats as F
from tgp.data.text.tasks import TextTask
from tgp.errors import ConfigError, DataNotFoundError


@dataclass(frozen=True)
class HubFile:
    """One official file and where its rows come from: ``(dataset, config, split)`` on the hub."""

    path: str  # relative to the task folder
    dataset: str
    config: str
    split: str
    text_a: str
    text_b: str | None
    label_kind: str  # the file's label: "index" (the class index as text: 0/1), "name" (the class name), "score"


def hub_files(task: TextTask) -> list[HubFile]:
    """The files of ``task`` and their hub sources."""
    glue = {"cola": ("sentence", None, "index"), "sst2": ("sentence", None, "index"),
            "mrpc": ("sentence1", "sentence2", "index"), "qqp": ("question1", "question2", "index"),
            "stsb": ("sentence1", "sentence2", "score"), "mnli": ("premise", "hypothesis", "name"),
            "qnli": ("question", "sentence", "name"), "rte": ("sentence1", "sentence2", "name")}
    if task.key in glue:
        a, b, label = glue[task.key]
        evals = {"": "validation", "matched": "validation_matched", "mismatched": "validation_mismatched"}
        files = [HubFile(task.train, "nyu-mll/glue", task.key, "train", a, b, label)]
        files += [HubFile(name, "nyu-mll/glue", task.key, evals[g], a, b, label) for g, name in task.tests.items()]
        return files
    if task.key == "xnli":
        files = [HubFile(task.train, "facebook/xnli", "en", "train", "premise", "hypothesis", "name")]
        source = ("facebook/xnli", "premise", "hypothesis", "name")
    elif task.key == "pawsx":
        files = [HubFile(task.train, "google-research-datasets/paws-x", "en", "train", "sentence1", "sentence2", "index")]
        source = ("google-research-datasets/paws-x", "sentence1", "sentence2", "index")
    else:
        raise ConfigError("data.download", True, f"{task.title} is not on the hub: it is generated here.",
                          "write it with `python -m tgp.data.text.generated --root <data.root>` and set data.download=false.")
    for split, hub_split in (("dev", "validation"), ("test", "test")):
        for lang, name in task.test_files(split).items():
            files.append(HubFile(name, source[0], lang, hub_split, source[1], source[2], source[3]))
    return files


def rows_to_examples(rows: Iterable[Mapping], spec: HubFile, label_name: Callable[[int], str] | None = None,
                     rename: Mapping[str, str] | None = None) -> list[F.Example]:
    """Hub rows (dicts with the texts and ``label``) as the official file's examples; ``label_name``
    maps a class index to its name (``ClassLabel.int2str``); ``rename`` maps a name to the file's own
    spelling (XNLI's training file says ``contradictory``)."""
    out = []
    for row in rows:
        value = row["label"]
        if spec.label_kind == "score":
            label = f"{float(value):.3f}"
        elif spec.label_kind == "index":
            label = str(int(value))
        else:
            label = label_name(int(value))
        out.append(F.Example(str(row[spec.text_a]), str(row[spec.text_b]) if spec.text_b else None,
                             (rename or {}).get(label, label)))
    return out


def download_task(task: TextTask, root: str) -> str:
    """Fetch ``task`` and write its files under ``task.folder_path(root)``; returns that folder."""
    files = hub_files(task)
    try:
        import datasets
    except ImportError:
        raise ConfigError("data.download", True, "fetching a text task needs the Hugging Face datasets library, "
                          "an optional extra that is not installed.",
                          "pip install 'tgp[hub]' (or pip install datasets) on a machine with network, or set "
                          "data.download=false and place the official files under data.root.") from None
    folder = task.folder_path(root)
    for spec in files:
        path = os.path.join(folder, spec.path)
        if os.path.isfile(path):
            continue
        try:
            split = datasets.load_dataset(spec.dataset, spec.config, split=spec.split)
        except Exception as exc:  # network, hub and cache errors: the data could not be fetched
            raise DataNotFoundError(
                f"{task.key} ({task.title}): fetching {spec.dataset} ({spec.config}, {spec.split}) from the Hugging "
                f"Face hub failed ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}). Run again on a machine "
                f"with network, or place the official files under {folder}.") from None
        label_name = getattr(split.features["label"], "int2str", None)
        rename = {"contradiction": "contradictory"} if spec.path == task.train and task.key == "xnli" else None
        layout = task.train_layout if spec.path == task.train else task.test_layout
        F.write_examples(path, layout, rows_to_examples(split, spec, label_name, rename))
    return folder
