"""The text tasks: where each one's files are, how they are laid out, its labels and its metrics.

GLUE (``<data.root>/glue_data/<TASK>/``, as the standard download script unpacks it):

=========  ========  ==========================================  ===============================
task       folder    files (train; test = the official dev set)  labels
=========  ========  ==========================================  ===============================
cola       CoLA      train.tsv; dev.tsv (no header)              0, 1
sst2       SST-2     train.tsv; dev.tsv                          0, 1
mrpc       MRPC      train.tsv; dev.tsv                          0, 1
qqp        QQP       train.tsv; dev.tsv                          0, 1
stsb       STS-B     train.tsv; dev.tsv                          a float score in [0, 5]
mnli       MNLI      train.tsv; dev_matched.tsv, dev_mismatched  entailment, neutral, contradiction
qnli       QNLI      train.tsv; dev.tsv                          entailment, not_entailment
rte        RTE       train.tsv; dev.tsv                          entailment, not_entailment
=========  ========  ==========================================  ===============================

XGLUE (``<data.root>/xglue_full_dataset/<TASK>/``, as ``xglue_full_dataset.tar.gz`` unpacks;
trained on English, evaluated on every language — zero-shot cross-lingual):

* ``xnli`` (``XNLI/``): ``multinli.train.en.tsv`` (header ``premise hypo label``); per language
  ``<lang>.dev`` and ``<lang>.test`` (no header: premise, hypothesis, label), 15 languages.
* ``pawsx`` (``PAWSX/``): ``en/train.tsv``; per language ``<lang>/dev_2k.tsv`` and
  ``<lang>/test_2k.tsv`` (header ``id sentence1 sentence2 label``), 4 languages.

The official dev set is the test split (GLUE's test labels are hidden; never selected on); the
model-selection split is carved from train. MNLI's label order follows the Hugging Face
``datasets`` copies (entailment 0, neutral 1, contradiction 2; ours), which XNLI shares.

Plus ``roleswap``, the generated task of :mod:`tgp.data.text.generated` (RTE's file layout).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass

from tgp.data.text import formats as F
from tgp.errors import ConfigError

GLUE_FOLDER = "glue_data"
XGLUE_FOLDER = "xglue_full_dataset"

XNLI_LANGUAGES = ("en", "ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
PAWSX_LANGUAGES = ("en", "de", "es", "fr")
NLI_LABELS = ("entailment", "neutral", "contradiction")


@dataclass(frozen=True)
class TextTask:
    """One task: its files under ``<root>/<benchmark folder>/<folder>/`` and what they hold.

    ``tests`` maps each evaluation group (``""`` for a task with one; MNLI's ``matched`` and
    ``mismatched``; XGLUE's languages) to its file, ``{split}`` standing for ``dev`` or ``test``
    where a benchmark has both (XGLUE); ``labels`` is None for a regression target.
    """

    key: str
    title: str
    benchmark: str  # glue | xglue | generated
    folder: str
    train: str
    train_layout: F.Layout
    tests: dict[str, str]
    test_layout: F.Layout
    labels: tuple[str, ...] | None
    metrics: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """Outputs of the classifier: one per label, or a single score for regression."""
        return len(self.labels) if self.labels is not None else 1

    @property
    def regression(self) -> bool:
        return self.labels is None

    @property
    def pair(self) -> bool:
        return self.train_layout.text_b is not None

    @property
    def benchmark_folder(self) -> str:
        return XGLUE_FOLDER if self.benchmark == "xglue" else GLUE_FOLDER

    def folder_path(self, root: str) -> str:
        """``<root>/<glue_data|xglue_full_dataset>/<folder>``; ``root`` may also be that benchmark folder."""
        root = os.path.abspath(os.path.expanduser(str(root)))
        if os.path.basename(root.rstrip(os.sep)) != self.benchmark_folder:
            root = os.path.join(root, self.benchmark_folder)
        return os.path.join(root, self.folder)

    def test_files(self, split: str = "dev") -> dict[str, str]:
        return {group: name.format(split=split) for group, name in self.tests.items()}

    def label_id(self, raw: str) -> int | float:
        """The class index of a label string (the float itself for regression); ValueError if unknown."""
        if self.labels is None:
            return float(raw)
        return self.labels.index(raw)


def _glue(key, title, folder, layout, labels, metrics, tests=None, train_layout=None) -> TextTask:
    return TextTask(key, title, "glue", folder, "train.tsv", train_layout or layout, tests or {"": "dev.tsv"}, layout,
                    labels, metrics)


BINARY = ("0", "1")
ENTAILMENT = ("entailment", "not_entailment")

TASKS: dict[str, TextTask] = {t.key: t for t in (
    _glue("cola", "GLUE CoLA", "CoLA", F.COLA, BINARY, ("mcc",)),
    _glue("sst2", "GLUE SST-2", "SST-2", F.SST2, BINARY, ("accuracy",)),
    _glue("mrpc", "GLUE MRPC", "MRPC", F.MRPC, BINARY, ("accuracy", "f1")),
    _glue("qqp", "GLUE QQP", "QQP", F.QQP, BINARY, ("accuracy", "f1")),
    _glue("stsb", "GLUE STS-B", "STS-B", F.STSB, None, ("pearson", "spearman")),
    _glue("mnli", "GLUE MNLI", "MNLI", F.MNLI_DEV, NLI_LABELS, ("accuracy",),
          tests={"matched": "dev_matched.tsv", "mismatched": "dev_mismatched.tsv"}, train_layout=F.MNLI_TRAIN),
    _glue("qnli", "GLUE QNLI", "QNLI", F.QNLI, ENTAILMENT, ("accuracy",)),
    _glue("rte", "GLUE RTE", "RTE", F.RTE, ENTAILMENT, ("accuracy",)),
    TextTask("xnli", "XGLUE XNLI", "xglue", "XNLI", "multinli.train.en.tsv", F.XNLI_TRAIN,
             {lang: f"{lang}.{{split}}" for lang in XNLI_LANGUAGES}, F.XNLI_EVAL, NLI_LABELS, ("accuracy",)),
    TextTask("pawsx", "XGLUE PAWS-X", "xglue", "PAWSX", os.path.join("en", "train.tsv"), F.PAWSX,
             {lang: os.path.join(lang, "{split}_2k.tsv") for lang in PAWSX_LANGUAGES}, F.PAWSX, BINARY,
             ("accuracy",)),
    TextTask("roleswap", "generated role-swap paraphrase task", "generated", "RoleSwap", "train.tsv", F.RTE,
             {"": "dev.tsv"}, F.RTE, BINARY, ("accuracy",)),
)}


def _normalized(name: str) -> str:
    return str(name).lower().replace("-", "").replace("_", "")


def get_task(name: object, setting: str = "data.task") -> TextTask:
    """The task ``name`` (case, ``-`` and ``_`` ignored: ``SST-2`` is ``sst2``); a typo is a
    :class:`ConfigError` with the closest name."""
    key = _normalized(name)
    if key in TASKS:
        return TASKS[key]
    if key == "mnlimm":
        raise ConfigError(setting, name, "MNLI's mismatched dev set is not a task of its own here: task mnli "
                          "evaluates on both dev_matched and dev_mismatched.", f"set {setting}=mnli.")
    close = difflib.get_close_matches(key, list(TASKS), n=1, cutoff=0.5)
    raise ConfigError(setting, name, "is not a known text task.",
                      (f"did you mean {close[0]}? " if close else "") + f"use one of: {', '.join(TASKS)}.")
