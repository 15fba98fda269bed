"""A generated task in GLUE's file format, and a WordPiece tokenizer the project trains on it.

For tests and an offline demo: real files read by the real loader, and a tokenizer folder that
``AutoTokenizer.from_pretrained(folder)`` loads exactly as it loads a hub tokenizer.

The task, ``roleswap`` (ours): is sentence B a paraphrase of sentence A? A is ``the <adj> <noun>
<verb>s the <adj> <noun>``; B says the same (A itself, or its passive) or swaps who does what to
whom (the roles swapped, in the active or the passive voice). Each of the four forms is equally
likely, so both classes have exactly the same distribution of words: a bag-of-words model is at
chance, and the label depends only on word order and on how B's order relates to A's — what
attention over the pair has to work out.

Files: ``<root>/glue_data/RoleSwap/train.tsv`` and ``dev.tsv`` in RTE's layout (header ``index
sentence1 sentence2 label``, label ``1`` = paraphrase), and the tokenizer in
``<root>/glue_data/RoleSwap/tokenizer/``.
"""

from __future__ import annotations

import os
import random

from tgp.data.text.formats import RTE, Example, write_examples
from tgp.data.text.tasks import TASKS

NOUNS = ("cat", "dog", "fox", "bird", "horse", "mouse", "rabbit", "lion", "tiger", "bear", "wolf", "goat", "sheep",
         "duck", "owl", "frog", "snake", "deer", "monkey", "zebra", "camel", "eagle", "whale", "shark", "seal", "crab")
ADJECTIVES = ("red", "small", "big", "old", "young", "happy", "sad", "brown", "white", "black", "quick", "lazy",
              "tall", "tiny", "green", "calm")
VERBS = (("chases", "chased"), ("follows", "followed"), ("helps", "helped"), ("watches", "watched"),
         ("pushes", "pushed"), ("calls", "called"), ("greets", "greeted"), ("visits", "visited"), ("kicks", "kicked"),
         ("pulls", "pulled"), ("hugs", "hugged"), ("thanks", "thanked"), ("warns", "warned"), ("tickles", "tickled"))
FORMS = ("same_active", "same_passive", "swapped_active", "swapped_passive")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def roleswap_example(rng: random.Random, form: str | None = None) -> tuple[Example, str]:
    """One pair and the form it was drawn as (label ``1`` for the ``same_*`` forms)."""
    n1, n2 = rng.sample(NOUNS, 2)
    a1, a2 = rng.choice(ADJECTIVES), rng.choice(ADJECTIVES)
    verb, participle = rng.choice(VERBS)
    form = form or rng.choice(FORMS)
    agent, patient = f"the {a1} {n1}", f"the {a2} {n2}"
    if form.startswith("swapped"):
        agent, patient = patient, agent
    b = f"{agent} {verb} {patient}" if form.endswith("active") else f"{patient} is {participle} by {agent}"
    return Example(f"the {a1} {n1} {verb} the {a2} {n2}", b, "1" if form.startswith("same") else "0"), form


def roleswap_examples(n: int, seed: int) -> list[Example]:
    """``n`` pairs, the four forms in equal shares (shuffled), drawn from ``seed``."""
    rng = random.Random(seed)
    forms = [FORMS[i % len(FORMS)] for i in range(n)]
    rng.shuffle(forms)
    return [roleswap_example(rng, form)[0] for form in forms]


def train_wordpiece(texts: list[str], folder: str, vocab_size: int = 512, model_max_length: int = 512) -> str:
    """Train a BERT-style WordPiece tokenizer (lower-cased, ``[CLS] A [SEP] B [SEP]`` with segment
    ids) on ``texts`` with Hugging Face ``tokenizers`` and save it as a tokenizer folder
    (``tokenizer.json``, ``tokenizer_config.json``) that ``AutoTokenizer.from_pretrained`` loads."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS)))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece()
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]", model_max_length=model_max_length)
    fast.save_pretrained(folder)
    return folder


def write_roleswap(root, n_train: int = 2000, n_dev: int = 400, seed: int = 0, vocab_size: int = 512) -> dict:
    """Write the ``roleswap`` task under ``<root>/glue_data/RoleSwap/`` and train its tokenizer.

    Returns ``{"folder", "tokenizer", "train", "dev"}`` (the examples as written)."""
    folder = TASKS["roleswap"].folder_path(str(root))
    train, dev = roleswap_examples(n_train, seed), roleswap_examples(n_dev, seed + 1)
    write_examples(os.path.join(folder, "train.tsv"), RTE, train)
    write_examples(os.path.join(folder, "dev.tsv"), RTE, dev)
    texts = [t for ex in train for t in (ex.text_a, ex.text_b)]
    tokenizer = train_wordpiece(texts, os.path.join(folder, "tokenizer"), vocab_size)
    return {"folder": folder, "tokenizer": tokenizer, "train": train, "dev": dev}


def main(argv=None) -> int:
    """``python -m tgp.data.text.generated [--root data]``: write the roleswap task and its tokenizer
    unless they are there already (``--force``: rewrite them)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tgp.data.text.generated", description=main.__doc__)
    ap.add_argument("--root", default="data", help="data.root (the task goes to <root>/glue_data/RoleSwap/)")
    ap.add_argument("--n-train", type=int, default=4000, help="training rows (ours: what the text demo trains on)")
    ap.add_argument("--n-dev", type=int, default=400, help="dev rows (the test split)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rewrite the files even when they exist")
    args = ap.parse_args(argv)
    folder = TASKS["roleswap"].folder_path(args.root)
    files = [os.path.join(folder, name) for name in ("train.tsv", "dev.tsv", os.path.join("tokenizer", "tokenizer.json"))]
    if all(os.path.isfile(f) for f in files) and not args.force:
        print(f"roleswap: {folder} is there (--force rewrites it)")
        return 0
    out = write_roleswap(args.root, n_train=args.n_train, n_dev=args.n_dev, seed=args.seed)
    print(f"roleswap: wrote {len(out['train'])} training and {len(out['dev'])} dev rows and the tokenizer to {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
