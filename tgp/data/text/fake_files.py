"""Tiny files in each real task's official format, filled with generated sentences (for loader tests).

They hold what the real files hold, quirks included, so the real reading code is what is tested:
CoLA without a header and with its ``*`` mark column, MRPC's header behind a byte-order mark, SST-2
sentences with double quotes (the format has no quoting), a QQP row with a stray ``\\r`` inside a
question and a broken row with too few fields (skipped, as the GLUE processors of ``transformers``
do), MNLI's parse columns and five annotator labels in the dev files, STS-B's float scores, XNLI's
``contradictory`` in its English training file and headerless per-language dev/test files,
PAWS-X's per-language folders.
"""

from __future__ import annotations

import os
import random

from tgp.data.text import formats as F
from tgp.data.text.generated import ADJECTIVES, NOUNS, VERBS
from tgp.data.text.tasks import TASKS, TextTask


def _sentence(rng: random.Random) -> str:
    verb = rng.choice(VERBS)[0]
    return f"the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {verb} the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"


def _label(task: TextTask, i: int, rng: random.Random) -> str:
    return f"{rng.uniform(0, 5):.3f}" if task.labels is None else task.labels[i % len(task.labels)]


def _examples(task: TextTask, n: int, rng: random.Random, layout: F.Layout, rename=None) -> list[F.Example]:
    out = []
    for i in range(n):
        a = _sentence(rng)
        if task.key == "sst2" and i == 0:
            a = f'the "quick" fox {a}'
        if task.key == "qqp" and i == 1:
            a = f"is the cat\rhappy {a} ?"
        label = _label(task, i, rng)
        out.append(F.Example(a, _sentence(rng) if layout.text_b else None, (rename or {}).get(label, label)))
    return out


def _extras(task: TextTask, layout: F.Layout, examples: list[F.Example], rng: random.Random) -> list[dict]:
    extras = []
    for ex in examples:
        e: dict[str, str] = {}
        if task.key == "cola":
            e = {"source": rng.choice(["gj04", "bc01", "ks08"]), "original_label": "" if ex.label == "1" else "*"}
        elif task.key == "mnli":
            e = {"genre": rng.choice(["fiction", "government", "slate"]),
                 "sentence1_binary_parse": f"( {ex.text_a} )", "sentence2_binary_parse": f"( {ex.text_b} )",
                 "sentence1_parse": f"(ROOT (S {ex.text_a}))", "sentence2_parse": f"(ROOT (S {ex.text_b}))",
                 **{f"label{k}": ex.label for k in range(1, 6)}}
        elif task.key == "stsb":
            e = {"genre": "main-captions", "filename": "MSRvid", "year": "2012test", "source1": "none", "source2": "none"}
        extras.append(e)
    return extras


def _write(task: TextTask, path: str, layout: F.Layout, examples: list[F.Example], rng: random.Random,
           raw_labels: dict | None = None) -> None:
    written = [F.Example(e.text_a, e.text_b, (raw_labels or {}).get(e.label, e.label)) for e in examples]
    F.write_examples(path, layout, written, _extras(task, layout, written, rng))
    if task.key == "mrpc":  # the MSR files start with a byte-order mark, which the download script keeps
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write("\ufeff" + text)
    if task.key == "qqp" and os.path.basename(path) == "train.tsv":
        with open(path, "a", encoding="utf-8") as f:
            f.write("999\t1\t2\ta question whose pair and label were lost\n")


def write_fake_task(root, key: str, n_train: int = 12, n_dev: int = 6, seed: int = 0, splits=("dev",)) -> dict:
    """Write task ``key``'s files under ``root`` (its official layout) and return what they hold:
    ``{"folder", "train": [Example], "tests": {group: [Example]}}`` with canonical label names
    (XNLI's ``contradictory`` already read as ``contradiction``). ``splits``: which of an XGLUE
    task's evaluation sets to write (``dev``, ``test``)."""
    task = TASKS[key]
    rng = random.Random(f"{key}-{seed}")
    folder = task.folder_path(str(root))
    raw = {"contradiction": "contradictory"} if key == "xnli" else None
    train = _examples(task, n_train, rng, task.train_layout)
    _write(task, os.path.join(folder, task.train), task.train_layout, train, rng, raw)
    tests = {}
    for split in splits:
        for group, name in task.test_files(split).items():
            examples = _examples(task, n_dev, rng, task.test_layout)
            _write(task, os.path.join(folder, name), task.test_layout, examples, rng)
            tests[(group, split)] = examples
    return {"folder": folder, "train": train, "tests": tests}


def write_fake_glue(root, n_train: int = 12, n_dev: int = 6, seed: int = 0) -> dict:
    """Every GLUE task of :data:`~tgp.data.text.tasks.TASKS` under ``<root>/glue_data``."""
    return {k: write_fake_task(root, k, n_train, n_dev, seed) for k, t in TASKS.items() if t.benchmark == "glue"}


def write_fake_xglue(root, n_train: int = 12, n_dev: int = 6, seed: int = 0) -> dict:
    """XNLI and PAWS-X under ``<root>/xglue_full_dataset``, dev and test sets of every language."""
    return {k: write_fake_task(root, k, n_train, n_dev, seed, splits=("dev", "test"))
            for k, t in TASKS.items() if t.benchmark == "xglue"}
