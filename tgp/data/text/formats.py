"""The file formats of the text tasks: one :class:`Layout` per kind of file, and reading and
writing rows exactly as the official distributions hold them.

Sources (read, not copied): the GLUE processors of Hugging Face ``transformers``
(``transformers/data/processors/glue.py``) and Microsoft's Unicoder XGLUE processors, the GLUE
download script's MRPC conversion (``download_glue_data.py``), and the ``datasets`` loading script
of XGLUE (its ``_PATHS`` and ``_generate_examples``). What they agree on:

* Tab-separated, UTF-8, no quoting: a ``"`` is part of the text (SST-2 and QQP hold many), so rows
  are split on tabs only — never parsed as CSV with quotes. Lines end at ``\\n`` only (a stray
  ``\\r`` inside a QQP question stays text). MRPC copies may start with a byte-order mark.
* Headerless files: CoLA's ``train.tsv``/``dev.tsv`` (source, label, original mark, sentence) and
  XGLUE XNLI's ``<lang>.dev``/``<lang>.test`` (premise, hypothesis, label); every other file has a
  header line, and columns are found by their header names.
* Labels are the strings of the files (``0``/``1``, ``entailment``...); XNLI's training file
  spells ``contradictory`` where the rest say ``contradiction``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tgp.errors import DataNotFoundError

log = logging.getLogger("tgp")


@dataclass(frozen=True)
class Layout:
    """One kind of file: its columns (the header line when ``has_header``) and which of them hold
    the first text, the optional second text and the label."""

    columns: tuple[str, ...]
    text_a: str
    text_b: str | None
    label: str
    has_header: bool = True
    # Raw label spellings mapped to the task's label names (XNLI train's "contradictory").
    rename_labels: Mapping[str, str] = field(default_factory=dict)
    # Rows with another number of fields: an error, or skipped and counted (QQP's train.tsv holds a
    # few broken rows; the GLUE processors of transformers skip them too).
    skip_malformed: bool = False


@dataclass(frozen=True)
class Example:
    """A row as the task reads it: one or two texts and the label string (the score for STS-B)."""

    text_a: str
    text_b: str | None
    label: str


# ------------------------------------------------------------------ the layouts
MNLI_FRONT = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2")

COLA = Layout(("source", "label", "original_label", "sentence"), "sentence", None, "label", has_header=False)
SST2 = Layout(("sentence", "label"), "sentence", None, "label")
MRPC = Layout(("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"), "#1 String", "#2 String", "Quality")
STSB = Layout(("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
               "score"), "sentence1", "sentence2", "score")
QQP = Layout(("id", "qid1", "qid2", "question1", "question2", "is_duplicate"), "question1", "question2",
             "is_duplicate", skip_malformed=True)
MNLI_TRAIN = Layout(MNLI_FRONT + ("label1", "gold_label"), "sentence1", "sentence2", "gold_label")
MNLI_DEV = Layout(MNLI_FRONT + ("label1", "label2", "label3", "label4", "label5", "gold_label"),
                  "sentence1", "sentence2", "gold_label")
QNLI = Layout(("index", "question", "sentence", "label"), "question", "sentence", "label")
RTE = Layout(("index", "sentence1", "sentence2", "label"), "sentence1", "sentence2", "label")
XNLI_TRAIN = Layout(("premise", "hypo", "label"), "premise", "hypo", "label",
                    rename_labels={"contradictory": "contradiction"})
XNLI_EVAL = Layout(("premise", "hypothesis", "label"), "premise", "hypothesis", "label", has_header=False)
PAWSX = Layout(("id", "sentence1", "sentence2", "label"), "sentence1", "sentence2", "label")


# ------------------------------------------------------------------ reading
def _lines(path: str) -> Iterable[tuple[int, str]]:
    # newline="\n": only \n ends a line (a universal-newline read would split at a stray \r);
    # utf-8-sig drops MRPC's byte-order mark.
    with open(path, encoding="utf-8-sig", newline="\n") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if line:
                yield lineno, line


def read_examples(path: str, layout: Layout, where: str) -> list[Example]:
    """The rows of ``path`` in ``layout``; ``where`` names the task in errors.

    A header without the columns the layout reads, a row with another number of fields (unless the
    layout skips those) or an undecodable byte is a :class:`DataNotFoundError` naming the file and line.
    """
    rows: list[Example] = []
    skipped = 0
    try:
        lines = iter(_lines(path))
        if layout.has_header:
            first = next(lines, None)
            header = tuple(first[1].split("\t")) if first is not None else ()
            missing = [c for c in (layout.text_a, layout.text_b, layout.label) if c is not None and c not in header]
            if missing:
                raise DataNotFoundError(
                    f"{where}: {path} does not have the official header: its first line is "
                    f"{chr(9).join(header)!r}, which lacks {', '.join(map(repr, missing))} (expected "
                    f"{chr(9).join(layout.columns)!r}). The file is not the official one or was edited; restore it "
                    "from the official distribution.")
        else:
            header = layout.columns
        ia, il = header.index(layout.text_a), header.index(layout.label)
        ib = header.index(layout.text_b) if layout.text_b is not None else None
        for lineno, line in lines:
            fields = line.split("\t")
            if len(fields) != len(header):
                if layout.skip_malformed:
                    skipped += 1
                    continue
                raise DataNotFoundError(
                    f"{where}: line {lineno} of {path} has {len(fields)} tab-separated fields where the "
                    f"{'header' if layout.has_header else 'format'} has {len(header)} ({line[:80]!r}). The file is "
                    "damaged or not the official one; restore it from the official distribution.")
            label = fields[il].strip()
            rows.append(Example(fields[ia], fields[ib] if ib is not None else None,
                                layout.rename_labels.get(label, label)))
    except UnicodeDecodeError as exc:
        raise DataNotFoundError(f"{where}: {path} is not UTF-8 text ({exc}); restore it from the official "
                                "distribution.") from None
    except OSError as exc:
        raise DataNotFoundError(f"{where}: cannot read {path} ({exc}).") from None
    if skipped:
        log.warning("%s: skipped %d malformed row(s) of %s (fewer or more fields than its header), as the GLUE "
                    "processors of transformers do", where, skipped, path)
    return rows


# ------------------------------------------------------------------ writing
def format_row(layout: Layout, example: Example, index: int, extra: Mapping[str, str] | None = None) -> str:
    """One line of ``layout`` holding ``example``; the other columns get ``extra`` values, else a
    running index for id-like columns and an empty string (e.g. MNLI's parses when fetched from the hub)."""
    values = []
    for column in layout.columns:
        if column == layout.text_a:
            value = example.text_a
        elif column == layout.text_b:
            value = example.text_b or ""
        elif column == layout.label:
            value = example.label
        elif extra is not None and column in extra:
            value = str(extra[column])
        elif column in ("index", "id", "pairID", "promptID", "qid1", "qid2", "#1 ID", "#2 ID", "old_index"):
            value = str(index)
        else:
            value = ""
        if "\t" in value or "\n" in value:
            value = " ".join(value.split())  # the format has no quoting: a tab or newline would break the row
        values.append(value)
    return "\t".join(values)


def write_examples(path: str, layout: Layout, examples: Sequence[Example],
                   extras: Sequence[Mapping[str, str]] | None = None) -> None:
    """Write ``examples`` in ``layout`` (header first when it has one), atomically (temp file + rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        if layout.has_header:
            f.write("\t".join(layout.columns) + "\n")
        for i, example in enumerate(examples):
            f.write(format_row(layout, example, i, extras[i] if extras is not None else None) + "\n")
    os.replace(tmp, path)
