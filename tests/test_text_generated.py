"""The generated roleswap task (word order decides, a bag of words cannot) and fetching through the
hub written in the official layouts (the conversion; no network in tests)."""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import pytest

from tgp.data.text import formats as F
from tgp.data.text.download import download_task, hub_files, rows_to_examples
from tgp.data.text.generated import FORMS, roleswap_example, roleswap_examples
from tgp.data.text.tasks import TASKS
from tgp.errors import ConfigError


def test_roleswap_files_are_rte_layout_and_balanced(roleswap):
    folder = roleswap["folder"]
    with open(os.path.join(folder, "train.tsv"), encoding="utf-8") as f:
        assert f.readline() == "index\tsentence1\tsentence2\tlabel\n"
    rows = F.read_examples(os.path.join(folder, "train.tsv"), F.RTE, "roleswap")
    assert [(r.text_a, r.text_b, r.label) for r in rows] == [(e.text_a, e.text_b, e.label) for e in roleswap["train"]]
    assert sum(r.label == "1" for r in rows) == len(rows) // 2
    assert roleswap_examples(40, 3) == roleswap_examples(40, 3) != roleswap_examples(40, 4)


def test_every_form_has_the_same_words_in_both_classes():
    for seed in range(50):
        drawn = {form: roleswap_example(random.Random(seed), form)[0] for form in FORMS}
        bags = {form: sorted((e.text_a + " " + e.text_b).split()) for form, e in drawn.items()}
        # Same draw, other form: the paraphrase and the role swap use exactly the same words.
        assert bags["same_active"] == bags["swapped_active"] and bags["same_passive"] == bags["swapped_passive"]
        assert drawn["same_active"].label == drawn["same_passive"].label == "1"
        assert drawn["swapped_active"].label == drawn["swapped_passive"].label == "0"


def _roles(sentence: str) -> tuple[str, str]:
    """(agent, patient) of an active or passive roleswap sentence: an order-aware reading."""
    w = sentence.split()
    if "by" in w:  # "the a n is verbed by the a n"
        return " ".join(w[-3:]), " ".join(w[:3])
    return " ".join(w[:3]), " ".join(w[-3:])


def test_bag_of_words_is_at_chance_and_word_order_solves_it():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    train, dev = roleswap_examples(2000, 0), roleswap_examples(1000, 1)
    vec = CountVectorizer(token_pattern=r"\S+")
    xa = vec.fit_transform([f"{e.text_a} {e.text_b}" for e in train])
    clf = LogisticRegression(max_iter=2000).fit(xa, [e.label for e in train])
    bow = clf.score(vec.transform([f"{e.text_a} {e.text_b}" for e in dev]), [e.label for e in dev])
    assert 0.44 < bow < 0.56  # chance: the classes share their word distribution
    rule = np.mean([(_roles(e.text_a) == _roles(e.text_b)) == (e.label == "1") for e in dev])
    assert rule == 1.0


# ------------------------------------------------------------------ the hub, written in the official layouts
@pytest.mark.parametrize("key", [k for k, t in TASKS.items() if t.benchmark != "generated"])
def test_every_file_of_a_task_has_a_hub_source(key):
    task = TASKS[key]
    paths = {s.path for s in hub_files(task)}
    expected = {task.train, *task.test_files("dev").values()}
    if task.benchmark == "xglue":
        expected |= set(task.test_files("test").values())
    assert paths == expected


def test_hub_rows_written_and_read_back_in_the_official_layout(tmp_path):
    mnli = TASKS["mnli"]
    spec = next(s for s in hub_files(mnli) if s.path == "dev_matched.tsv")
    names = ["entailment", "neutral", "contradiction"]  # the hub copy's ClassLabel
    rows = [{"premise": "A man sleeps.", "hypothesis": "A man is awake.", "label": 2},
            {"premise": "Two dogs\trun.", "hypothesis": "Animals move.", "label": 0}]
    examples = rows_to_examples(rows, spec, names.__getitem__)
    path = tmp_path / "dev_matched.tsv"
    F.write_examples(str(path), mnli.test_layout, examples)
    back = F.read_examples(str(path), F.MNLI_DEV, "mnli")
    assert [(b.text_a, b.text_b, b.label) for b in back] == [
        ("A man sleeps.", "A man is awake.", "contradiction"), ("Two dogs run.", "Animals move.", "entailment")]
    header = path.read_text(encoding="utf-8").splitlines()[0].split("\t")
    assert header == list(F.MNLI_DEV.columns) and len(header) == 16
    stsb = next(s for s in hub_files(TASKS["stsb"]) if s.path == "dev.tsv")
    assert rows_to_examples([{"sentence1": "a", "sentence2": "b", "label": 3.799999952}], stsb)[0].label == "3.800"
    xnli_train = next(s for s in hub_files(TASKS["xnli"]) if s.path == TASKS["xnli"].train)
    assert rows_to_examples([{"premise": "p", "hypothesis": "h", "label": 2}], xnli_train, names.__getitem__,
                            {"contradiction": "contradictory"})[0].label == "contradictory"


def test_download_without_the_hub_extra_names_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed: importing it fails
    with pytest.raises(ConfigError) as info:
        download_task(TASKS["rte"], str(tmp_path))
    msg = str(info.value)
    assert msg.startswith("data.download=True") and "tgp[hub]" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="generated"):
        download_task(TASKS["roleswap"], str(tmp_path))
