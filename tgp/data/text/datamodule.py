"""The text classification DataModule: a task's official files, tokenized once, batches ``(x, y)``.

``x`` is ``int64 [B, L]`` token ids padded per batch with the tokenizer's pad id (the model derives
its attention mask from it), ``y`` the class indices (``float32`` scores for STS-B). The
model-selection split is carved from train (seeded by ``data.split_seed``); the official dev set
is the test split. A task with several evaluation sets (MNLI matched/mismatched, the languages of
an XGLUE task) serves them concatenated in :meth:`test_dataloader` and one by one in
:meth:`test_group_dataloaders`.
"""

from __future__ import annotations

import hashlib
import logging
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tgp.data.base import ClassificationDataModule
from tgp.data.cache_files import default_folders
from tgp.data.text import formats
from tgp.data.text.tasks import TextTask, get_task
from tgp.data.text.token_cache import TokenizedFile, cached_tokenized_file, tokenize_examples
from tgp.data.text.token_loader import TokenDeviceLoader
from tgp.data.text.tokenized import PadCollate, TokenizedRows
from tgp.data.text.tokenizer import load_tokenizer, tokenizer_fingerprint
from tgp.errors import ConfigError, DataNotFoundError

log = logging.getLogger("tgp")

EVAL_SPLITS = ("dev", "test")


class TextClassificationDataModule(ClassificationDataModule):
    """One GLUE, XGLUE or generated task (``data.task``) with the model's tokenizer (``data.tokenizer``).

    * ``max_length``: rows are truncated to this many tokens (special tokens included; the longer
      text of a pair first).
    * ``languages``: the evaluation languages of an XGLUE task (default: all); training is English.
    * ``eval_split``: which official set is the test split: ``dev`` (GLUE's only labelled one; the
      default for XGLUE too) or ``test`` (XGLUE only).
    * ``cache``/``cache_dir``: the token cache (:mod:`~tgp.data.text.token_cache`), beside the data
      (``<task folder>/.tgp_cache``) or in ``cache_dir``; ``cache=false`` tokenizes in memory.
    """

    modality = "text"

    @classmethod
    def dataset_name_of(cls, data_cfg) -> str:
        """The task's key (``cola``, ``mnli``, ``xnli``, ...): what ``self.name`` is once built."""
        return get_task(data_cfg.get("task")).key

    def __init__(self, task: str, tokenizer: str, *args, max_length: int = 128, languages=None,
                 eval_split: str = "dev", cache: bool = True, cache_dir: str | None = None, **kwargs):
        self.task: TextTask = get_task(task)
        self.name = self.task.key
        self.num_classes = self.task.num_classes
        self.benchmark = self.task.benchmark if self.task.benchmark in ("glue", "xglue") else None
        super().__init__(*args, **kwargs)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 4:
            raise ConfigError("data.max_length", max_length, "must be an integer >= 4 (tokens per row, special "
                              "tokens included).", "set data.max_length to e.g. 128 (the usual GLUE fine-tuning length).")
        if eval_split not in EVAL_SPLITS or (eval_split == "test" and self.task.benchmark != "xglue"):
            raise ConfigError("data.eval_split", eval_split,
                              f"{self.task.title} has labels only in its dev set (GLUE's test labels are hidden)."
                              if eval_split == "test" else "must be dev or test.",
                              "set data.eval_split=dev" + (" (or test, for XGLUE tasks)." if eval_split != "test" else "."))
        if not isinstance(cache, bool):
            raise ConfigError("data.cache", cache, "must be true or false.",
                              "set data.cache=true (tokenize each file once into a cache) or false.")
        self.max_length, self.eval_split, self.cache, self.cache_dir = max_length, eval_split, cache, cache_dir
        self.languages = self._checked_languages(languages)
        self.tokenizer_source = tokenizer
        self.tokenizer = load_tokenizer(tokenizer, "data.tokenizer")
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.vocab_size = len(self.tokenizer)
        self.collate_fn = PadCollate(self.pad_id, self.task.regression)
        self.cache_builds: dict[str, float] = {}  # file -> seconds, for the caches this module built
        self.test_groups: dict[str, np.ndarray] = {}  # group -> positions in the test split
        self._raw_groups: dict[str, tuple[int, int]] = {}  # group -> its rows [start, stop) in the raw test set

    def _checked_languages(self, languages) -> tuple[str, ...]:
        groups = tuple(self.task.tests)
        if languages is None:
            return groups
        if self.task.benchmark != "xglue":
            raise ConfigError("data.languages", languages, f"{self.task.title} is not a cross-lingual task.",
                              "leave data.languages unset (null).")
        chosen = (languages,) if isinstance(languages, str) else tuple(str(x) for x in languages)
        unknown = [x for x in chosen if x not in groups]
        if unknown or not chosen:
            raise ConfigError("data.languages", list(chosen), f"{self.task.title} is evaluated in {', '.join(groups)}"
                              + (f"; {', '.join(unknown)} is not one of them." if unknown else "."),
                              "set data.languages to a list of those (or null for all).")
        return tuple(g for g in groups if g in chosen)

    # ----------------------------------------------------------------- files
    @property
    def data_path(self) -> str:
        return self.task.folder_path(self.root)

    def _missing(self, path: str) -> DataNotFoundError:
        t = self.task
        if t.benchmark == "glue":
            how = (f"set data.download=true on a machine with network (pip install 'tgp[hub]'), or run the GLUE "
                   f"download script (download_glue_data.py, https://gluebenchmark.com/tasks) and unpack it under "
                   f"data.root so that {path} exists")
        elif t.benchmark == "xglue":
            how = ("set data.download=true on a machine with network (pip install 'tgp[hub]'), or download "
                   "xglue_full_dataset.tar.gz (https://microsoft.github.io/XGLUE/) and unpack it under data.root so "
                   f"that {path} exists")
        else:
            how = ("write it with `python -m tgp.data.text.generated --root <data.root>` (it also trains the "
                   "task's WordPiece tokenizer)")
        where = "folder not found" if not os.path.isdir(self.data_path) else f"{os.path.basename(path)} not found"
        return DataNotFoundError(
            f"{t.key} ({t.title}): {where} (looked for {path}). To get the data, {how}; data.root="
            f"{os.path.abspath(os.path.expanduser(self.root))} may also point at the {t.benchmark_folder} folder itself.")

    def _files(self) -> tuple[str, dict[str, str]]:
        """``(train file, {group: test file})`` of this task, every one checked to exist."""
        base = self.data_path
        train = os.path.join(base, self.task.train)
        tests = {g: os.path.join(base, name) for g, name in self.task.test_files(self.eval_split).items()
                 if g in self.languages}
        for path in (train, *tests.values()):
            if not os.path.isfile(path):
                raise self._missing(path)
        return train, tests

    def prepare_data(self) -> None:
        if not self.download:
            return
        try:
            self._files()
        except DataNotFoundError:
            from tgp.data.text.download import download_task

            download_task(self.task, self.root)

    # ----------------------------------------------------------------- tokenizing (cached)
    def cache_folders(self) -> list[str]:
        tag = f"{self.name}-{hashlib.sha1(self.data_path.encode()).hexdigest()[:10]}"
        return default_folders(self.data_path, tag, self.cache_dir)

    def _tokenized(self, path: str, layout: formats.Layout, fingerprint: str) -> TokenizedFile:
        where = f"{self.task.key} ({self.task.title})"

        def examples():
            return formats.read_examples(path, layout, where)

        if not self.cache:
            return tokenize_examples(examples(), self.task, self.tokenizer, self.max_length, where, path)
        rel = os.path.relpath(path, self.data_path).replace(os.sep, "_")
        name = f"{rel}-{fingerprint[:10]}-L{self.max_length}"
        tokenized, result = cached_tokenized_file(
            path, self.data_path, examples, self.task, self.tokenizer, fingerprint, self.max_length,
            self.cache_folders(), name=name, dataset=where, setting_value=self.cache_dir)
        if result.built:
            self.cache_builds[rel] = result.seconds
        return tokenized

    def _load_raw(self) -> tuple[TokenizedFile, TokenizedFile]:
        train_path, test_paths = self._files()
        fingerprint = tokenizer_fingerprint(self.tokenizer)
        train = self._tokenized(train_path, self.task.train_layout, fingerprint)
        parts, start = [], 0
        self._raw_groups = {}
        for group, path in test_paths.items():
            part = self._tokenized(path, self.task.test_layout, fingerprint)
            parts.append(part)
            self._raw_groups[group] = (start, start + len(part))
            start += len(part)
        return train, TokenizedFile.concatenate(parts)

    def _subset(self, dataset: TokenizedFile, indices: np.ndarray, split: str) -> Dataset:
        return TokenizedRows(dataset, indices)

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        super().setup(stage)
        self.test_groups = {g: np.flatnonzero((self.test_indices >= a) & (self.test_indices < b))
                            for g, (a, b) in self._raw_groups.items()}

    # ----------------------------------------------------------------- what the model sees
    def model_kwargs(self) -> dict:
        """``num_classes``: the classifier's outputs (one per label; 1 for STS-B's regression score). The
        tokenizer is the model config's own (``model.tokenizer``; :meth:`check_model` checks it is the data's)."""
        return {"num_classes": int(self.num_classes)}

    @property
    def scoring(self):
        """The task's official metrics (:func:`tgp.metrics.text.text_scoring`)."""
        from tgp.metrics.text import text_scoring

        return text_scoring(self.task)

    def check_model(self, model, setting: str = "model") -> None:
        """The model reads these token ids: a Transformer (:class:`~tgp.models.text.TextClassifier`) with this
        tokenizer (:func:`tgp.models.text.check_data_fits`)."""
        from tgp.models.text import check_data_fits

        super().check_model(model, setting)
        if getattr(model, "modality", None) != "text":
            raise ConfigError(setting, getattr(model, "arch", type(model).__name__), f"the {self.name} data is token "
                              "ids, which only a Transformer of tgp.models.text reads.",
                              f"use a text model for {setting} (e.g. bert_tiny, bert_base, xlmr_base).")
        check_data_fits(model, self)

    def check_net_config(self, node, setting: str) -> None:
        """A configured network (``teacher.net``) must use this data's tokenizer: the batches are token ids
        of one tokenizer, read by every network of the job (checked without building the network)."""
        source = node.get("tokenizer") if hasattr(node, "get") else None
        if not source:
            raise ConfigError(setting, node.get("name") if hasattr(node, "get") else node, "the text data is token "
                              f"ids of one tokenizer ({self.tokenizer_source}), and this network names no tokenizer: "
                              "it is not a text model.",
                              f"set {setting} to a text model config (e.g. teacher=bert_tiny), whose tokenizer is the data's.")
        if str(source) == str(self.tokenizer_source):
            return
        other = load_tokenizer(str(source), f"{setting}.tokenizer")
        if tokenizer_fingerprint(other) != tokenizer_fingerprint(self.tokenizer):
            raise ConfigError(f"{setting}.tokenizer", source, f"this tokenizer is not the data's "
                              f"({self.tokenizer_source}): the network would read the data's token ids as other words.",
                              f"use a {setting} of the same model family, with the data's tokenizer "
                              f"({setting}.tokenizer={self.tokenizer_source}).")

    @property
    def mean_length(self) -> int:
        """The mean tokenized length of the training split (special tokens included), rounded."""
        self._require_setup()
        rows = self.data_train
        return max(2, int(round(float(rows.source.lengths[rows.indices].mean()))))

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """Token ids ``int64 (batch_size, L)`` at the task's mean length ``L``: the first special
        token, ordinary tokens, the separator — no padding, so every position is attended."""
        length = self.mean_length
        tok = self.tokenizer
        filler = tok.unk_token_id if tok.unk_token_id is not None else self.pad_id
        x = torch.full((int(batch_size), length), int(filler), dtype=torch.long)
        if tok.cls_token_id is not None:
            x[:, 0] = tok.cls_token_id
        if tok.sep_token_id is not None:
            x[:, -1] = tok.sep_token_id
        return x

    # ----------------------------------------------------------------- loaders
    def _device_loader(self, split: str, device=None, *, trainer=None, **kw) -> TokenDeviceLoader:
        """``split`` served by a :class:`TokenDeviceLoader` on ``device`` (default: the Trainer's
        root device, else the CPU), with the batch sizes, drop_last rule and order of the torch path."""
        self._require_setup()
        rows = {"train": self.data_train, "val": self.data_val, "test": self.data_test}[split]
        trainer = trainer if trainer is not None else getattr(self, "trainer", None)
        if device is None:
            device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        train = split == "train"
        return TokenDeviceLoader(
            rows.compact(), batch_size=self.rank_batch_size if train else self.rank_eval_batch_size,
            pad_id=self.pad_id, device=device, shuffle=train, drop_last=train and len(rows) > self.batch_size,
            seed=self.shuffle_seed, regression=self.task.regression,
            epoch_fn=(lambda: trainer.current_epoch) if train and trainer is not None else None, **kw)

    def test_group_dataloaders(self) -> dict[str, DataLoader]:
        """One loader per evaluation set (``""`` for a task with one), in the task's order."""
        self._require_setup()
        rows = self.data_test
        return {g: self._loader(TokenizedRows(rows.source, rows.indices[pos]), self.rank_eval_batch_size, shuffle=False)
                for g, pos in self.test_groups.items()}
