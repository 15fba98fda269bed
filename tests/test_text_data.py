"""Text tasks read from files in the official GLUE and XGLUE layouts, by the real loader.

Two kinds of files: literal lines in the official style (written here by hand, so a reader and a
writer sharing one mistake cannot agree with each other), and tiny files of every task written by
tgp.data.text.fake_files. Labels are checked against hand-written mappings, token ids against the
tokenizer called directly.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tgp.data import TextClassificationDataModule
from tgp.data.text import formats as F
from tgp.data.text.fake_files import write_fake_task
from tgp.data.text.tasks import TASKS, get_task
from tgp.errors import ConfigError, DataNotFoundError

# The label index of each label string: written out here, not read from the task table.
BINARY = {"0": 0, "1": 1}
NLI = {"entailment": 0, "neutral": 1, "contradiction": 2}
ENTAIL = {"entailment": 0, "not_entailment": 1}
EXPECTED_LABELS = {"cola": BINARY, "sst2": BINARY, "mrpc": BINARY, "qqp": BINARY, "mnli": NLI, "qnli": ENTAIL,
                   "rte": ENTAIL, "xnli": NLI, "pawsx": BINARY, "roleswap": BINARY}
GLUE = ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte"]


def _dm(key, root, tokenizer, **kw):
    kw = {"batch_size": 4, "eval_batch_size": 4, "val_size": 2, **kw}
    return TextClassificationDataModule(key, tokenizer, root=str(root), **kw)


def _expected(key, examples):
    if key == "stsb":
        return np.array([float(e.label) for e in examples], dtype=np.float32)
    return np.array([EXPECTED_LABELS[key][e.label] for e in examples])


def _ids(tokenizer, e, max_length=128):
    return tokenizer(e.text_a, e.text_b, truncation=True, max_length=max_length)["input_ids"]


def _raw_row(split, i):
    src = split.source
    return src.ids[src.offsets[i]:src.offsets[i + 1]].tolist()


# ------------------------------------------------------------------ literal lines in the official style
LITERAL = {
    ("CoLA", "train.tsv"): (
        "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\n"
        "gj04\t0\t*\tThey drank the pub.\n"),
    ("MRPC", "train.tsv"): (
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        "1\t702876\t702977\tAmrozi accused his brother , whom he called \" the witness \" , of deliberately "
        "distorting his evidence .\tReferring to him as only \" the witness \" , Amrozi accused his brother of "
        "deliberately distorting his evidence .\n"
        "0\t2108705\t2108831\tYucaipa owned Dominick 's before selling the chain to Safeway in 1998 for $ 2.5 "
        "billion .\tYucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway for $ 1.8 billion "
        "in 1998 .\n"),
    ("STS-B", "dev.tsv"): (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat is dancing.\tA man wearing a "
        "hard hat is dancing.\t5.000\n"
        "1\tmain-captions\tMSRvid\t2012test\t0002\tnone\tnone\tA young child is riding a horse.\tA child is riding "
        "a horse.\t4.750\n"),
    ("MNLI", "dev_mismatched.tsv"): (
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
        "sentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n"
        "0\t75290\t75290c\tletters\t( ( Your contribution ) helped )\t( ( Your contribution ) ( was useless ) )\t"
        "(ROOT (S (NP (PRP$ Your) (NN contribution)) (VP (VBD helped))))\t(ROOT (S (NP (PRP$ Your) (NN contribution))"
        " (VP (VBD was) (ADJP (JJ useless)))))\tYour contribution helped make it possible for us to provide our "
        "students with a quality education.\tYour contributions were of no help with our students' education."
        "\tcontradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\n"),
}
LITERAL_EXPECTED = {
    ("CoLA", "train.tsv"): [("Our friends won't buy this analysis, let alone the next one we propose.", None, "1"),
                            ("They drank the pub.", None, "0")],
    ("MRPC", "train.tsv"): [
        ("Amrozi accused his brother , whom he called \" the witness \" , of deliberately distorting his evidence .",
         "Referring to him as only \" the witness \" , Amrozi accused his brother of deliberately distorting his "
         "evidence .", "1"),
        ("Yucaipa owned Dominick 's before selling the chain to Safeway in 1998 for $ 2.5 billion .",
         "Yucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway for $ 1.8 billion in 1998 .",
         "0")],
    ("STS-B", "dev.tsv"): [("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", "5.000"),
                           ("A young child is riding a horse.", "A child is riding a horse.", "4.750")],
    ("MNLI", "dev_mismatched.tsv"): [
        ("Your contribution helped make it possible for us to provide our students with a quality education.",
         "Your contributions were of no help with our students' education.", "contradiction")],
}
LAYOUTS = {"CoLA": F.COLA, "MRPC": F.MRPC, "STS-B": F.STSB, "MNLI": F.MNLI_DEV}


@pytest.mark.parametrize("where", list(LITERAL))
def test_official_lines_read_column_by_column(tmp_path, where):
    path = tmp_path / where[1]
    path.write_text(LITERAL[where], encoding="utf-8")
    rows = F.read_examples(str(path), LAYOUTS[where[0]], where[0])
    assert [(r.text_a, r.text_b, r.label) for r in rows] == LITERAL_EXPECTED[where]


def test_xglue_lines_read_with_their_spellings(tmp_path):
    train = tmp_path / "multinli.train.en.tsv"
    train.write_text("premise\thypo\tlabel\nConceptually cream skimming has two basic dimensions - product and "
                     "geography .\tProduct and geography are what make cream skimming work .\tneutral\n"
                     "you know during the season and i guess at at your level uh you lose them to the next level if "
                     "if they decide to recall the the parent team the Braves decide to call to recall a guy from "
                     "triple A then a double A guy goes up to replace him and a single A guy goes up to replace him"
                     "\tYou lose the things to the following level if the people recall .\tcontradictory\n",
                     encoding="utf-8")
    dev = tmp_path / "de.dev"
    dev.write_text("Und er hat gesagt, Mama, ich bin daheim.\tEr rief seine Mutter an, sobald er daheim war."
                   "\tentailment\n", encoding="utf-8")
    rows = F.read_examples(str(train), F.XNLI_TRAIN, "xnli")
    assert [r.label for r in rows] == ["neutral", "contradiction"]  # contradictory read as contradiction
    assert rows[0].text_b == "Product and geography are what make cream skimming work ."
    (row,) = F.read_examples(str(dev), F.XNLI_EVAL, "xnli")
    assert (row.text_a, row.label) == ("Und er hat gesagt, Mama, ich bin daheim.", "entailment")


# ------------------------------------------------------------------ every task through the DataModule
@pytest.mark.parametrize("key", GLUE + ["roleswap"])
def test_glue_task_labels_and_token_ids(tmp_path, roleswap, key):
    info = write_fake_task(tmp_path, key, n_train=12, n_dev=6)
    dm = _dm(key, tmp_path, roleswap["tokenizer"])
    dm.setup()
    tok = dm.tokenizer
    assert dm.num_classes == (1 if key == "stsb" else len(set(EXPECTED_LABELS[key].values())))
    train = dm.data_train
    assert len(dm.data_train) + len(dm.data_val) == 12  # QQP's broken row skipped
    assert sorted(np.concatenate([dm.train_indices, dm.val_indices]).tolist()) == list(range(12))
    np.testing.assert_array_equal(train.source.labels, _expected(key, info["train"]))
    for i, e in enumerate(info["train"]):
        assert _raw_row(train, i) == _ids(tok, e), (key, i)
    expected_test = [e for (_, split), rows in info["tests"].items() for e in rows]
    np.testing.assert_array_equal(dm.data_test.source.labels, _expected(key, expected_test))
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.int64 and x.dim() == 2
    assert y.dtype == (torch.float32 if key == "stsb" else torch.int64)


def test_mnli_has_three_labels_and_both_dev_sets(tmp_path, roleswap):
    info = write_fake_task(tmp_path, "mnli", n_train=9, n_dev=5)
    dm = _dm("mnli", tmp_path, roleswap["tokenizer"])
    dm.setup()
    assert dm.num_classes == 3 and set(dm.data_train.source.labels.tolist()) == {0, 1, 2}
    assert list(dm.test_groups) == ["matched", "mismatched"]
    loaders = dm.test_group_dataloaders()
    for group, loader in loaders.items():
        labels = torch.cat([y for _, y in loader]).tolist()
        assert labels == [NLI[e.label] for e in info["tests"][(group, "dev")]]
    # The concatenated test loader holds both, matched first.
    assert torch.cat([y for _, y in dm.test_dataloader()]).tolist() == [
        NLI[e.label] for g in ("matched", "mismatched") for e in info["tests"][(g, "dev")]]


def test_stsb_scores_are_float_targets(tmp_path, roleswap):
    info = write_fake_task(tmp_path, "stsb", n_train=10, n_dev=4)
    dm = _dm("stsb", tmp_path, roleswap["tokenizer"])
    ys = torch.cat([y for _, y in dm.test_dataloader()])
    assert ys.dtype == torch.float32 and dm.num_classes == 1 and dm.task.regression
    assert torch.allclose(ys, torch.tensor([float(e.label) for e in info["tests"][("", "dev")]]))


@pytest.mark.parametrize("key,languages", [("xnli", 15), ("pawsx", 4)])
def test_xglue_trains_on_english_and_tests_every_language(tmp_path, roleswap, key, languages):
    info = write_fake_task(tmp_path, key, n_train=10, n_dev=3, splits=("dev", "test"))
    dm = _dm(key, tmp_path, roleswap["tokenizer"])
    dm.setup()
    assert len(dm.test_groups) == languages and list(dm.test_groups)[0] == "en"
    np.testing.assert_array_equal(dm.data_train.source.labels, _expected(key, info["train"]))
    for lang, loader in dm.test_group_dataloaders().items():
        rows = info["tests"][(lang, "dev")]
        xs = [x for x, _ in loader]
        assert torch.cat([y for _, y in loader]).tolist() == [EXPECTED_LABELS[key][e.label] for e in rows]
        first = xs[0][0][xs[0][0] != dm.pad_id].tolist()
        assert first == _ids(dm.tokenizer, rows[0])
    # A subset of languages, and XGLUE's test files instead of its dev files.
    sub = _dm(key, tmp_path, roleswap["tokenizer"], languages=["de", "en"], eval_split="test")
    sub.setup()
    assert list(sub.test_groups) == ["en", "de"]
    assert torch.cat([y for _, y in sub.test_group_dataloaders()["de"]]).tolist() == [
        EXPECTED_LABELS[key][e.label] for e in info["tests"][("de", "test")]]


def test_qqp_broken_row_is_skipped_and_counted(tmp_path, roleswap, caplog):
    write_fake_task(tmp_path, "qqp", n_train=6, n_dev=3)
    with caplog.at_level("WARNING", logger="tgp"):
        rows = F.read_examples(os.path.join(TASKS["qqp"].folder_path(str(tmp_path)), "train.tsv"), F.QQP, "qqp")
    assert len(rows) == 6 and "skipped 1 malformed row" in caplog.text
    assert "\r" in rows[1].text_a  # a stray carriage return stays inside its question


def test_batches_are_padded_per_batch_not_to_a_global_maximum(roleswap):
    dm = _dm("roleswap", roleswap["root"], roleswap["tokenizer"], batch_size=2, eval_batch_size=2)
    dm.setup()
    lengths = dm.data_test.source.lengths
    for b, (x, _) in enumerate(dm.test_dataloader()):
        rows = lengths[2 * b:2 * b + 2]
        assert x.shape[1] == rows.max()
        for r, n in enumerate(rows):
            assert (x[r, n:] == dm.pad_id).all() and (x[r, :n] != dm.pad_id).all()


def test_example_input_is_token_ids_at_the_mean_length(roleswap):
    dm = _dm("roleswap", roleswap["root"], roleswap["tokenizer"])
    x = dm.example_input(3)
    mean = dm.data_train.source.lengths[dm.train_indices].mean()
    assert x.shape == (3, round(mean)) and x.dtype == torch.int64
    assert x[0, 0] == dm.tokenizer.cls_token_id and x[0, -1] == dm.tokenizer.sep_token_id


def test_split_carving_is_seeded_and_test_is_the_dev_file(roleswap):
    a = _dm("roleswap", roleswap["root"], roleswap["tokenizer"], val_size=0.25, split_seed=1)
    b = _dm("roleswap", roleswap["root"], roleswap["tokenizer"], val_size=0.25, split_seed=1)
    c = _dm("roleswap", roleswap["root"], roleswap["tokenizer"], val_size=0.25, split_seed=2)
    for dm in (a, b, c):
        dm.setup()
    assert np.array_equal(a.val_indices, b.val_indices) and not np.array_equal(a.val_indices, c.val_indices)
    assert len(a.val_indices) == 60 and not set(a.val_indices) & set(a.train_indices)
    assert len(a.data_test) == len(roleswap["dev"])  # the whole dev file, never carved


# ------------------------------------------------------------------ errors: one paragraph, the fix named
def _paragraph(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_missing_glue_folder_names_task_path_and_how_to_get_it(tmp_path, roleswap):
    with pytest.raises(DataNotFoundError) as info:
        _dm("sst2", tmp_path, roleswap["tokenizer"]).setup()
    msg = _paragraph(info)
    assert "sst2" in msg and os.path.join("glue_data", "SST-2", "train.tsv") in msg
    assert "data.download=true" in msg and "download_glue_data.py" in msg and "tgp[hub]" in msg


def test_missing_xglue_language_file_names_the_archive(tmp_path, roleswap):
    write_fake_task(tmp_path, "pawsx", n_train=6, n_dev=2)
    os.remove(os.path.join(TASKS["pawsx"].folder_path(str(tmp_path)), "fr", "dev_2k.tsv"))
    with pytest.raises(DataNotFoundError) as info:
        _dm("pawsx", tmp_path, roleswap["tokenizer"]).setup()
    msg = _paragraph(info)
    assert os.path.join("PAWSX", "fr", "dev_2k.tsv") in msg and "xglue_full_dataset.tar.gz" in msg


def test_task_typo_suggests_the_task(roleswap):
    with pytest.raises(ConfigError) as info:
        _dm("qnlii", ".", roleswap["tokenizer"])
    msg = _paragraph(info)
    assert msg.startswith("data.task='qnlii'") and "did you mean qnli?" in msg
    assert get_task("STS-B").key == "stsb" and get_task("PAWS-X").key == "pawsx"


@pytest.mark.parametrize("damage,expected", [
    (lambda p: p.write_text("text\tlabel\nthe cat\t1\n"), "official header"),
    (lambda p: p.write_text("sentence\tlabel\nthe cat\t2\n"), "label '2'"),
    (lambda p: p.write_text("sentence\tlabel\nthe cat\t1\textra\n"), "line 2"),
    (lambda p: p.write_bytes(b"sentence\tlabel\n\xff\xfe\t1\n"), "not UTF-8"),
])
def test_damaged_files_are_one_paragraph_naming_the_file(tmp_path, roleswap, damage, expected):
    write_fake_task(tmp_path, "sst2", n_train=6, n_dev=2)
    path = tmp_path / "glue_data" / "SST-2" / "train.tsv"
    damage(path)
    with pytest.raises(DataNotFoundError) as info:
        _dm("sst2", tmp_path, roleswap["tokenizer"], val_size=0).setup()
    msg = _paragraph(info)
    assert str(path) in msg and expected in msg


@pytest.mark.parametrize("kw,setting", [({"max_length": 2}, "data.max_length"), ({"eval_split": "test"}, "data.eval_split"),
                                        ({"languages": ["de"]}, "data.languages"), ({"cache": "yes"}, "data.cache"),
                                        ({"tokenizer": ""}, "data.tokenizer")])
def test_bad_settings_are_config_errors(roleswap, kw, setting):
    kw = {"tokenizer": roleswap["tokenizer"], **kw}
    with pytest.raises(ConfigError) as info:
        TextClassificationDataModule("sst2", root=".", **kw)
    assert _paragraph(info).startswith(f"{setting}=")


def test_unloadable_tokenizer_names_the_setting(tmp_path):
    (tmp_path / "tok").mkdir()
    with pytest.raises(ConfigError) as info:
        TextClassificationDataModule("sst2", str(tmp_path / "tok"), root=".")
    assert _paragraph(info).startswith("data.tokenizer=") and "save_pretrained" in str(info.value)
    with pytest.raises(ConfigError) as info:  # a hub name, offline in tests: fails at once
        TextClassificationDataModule("sst2", "no-such-org/no-such-tokenizer", root=".")
    assert "HF_HUB_OFFLINE" in _paragraph(info)
