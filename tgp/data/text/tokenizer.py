"""The model's own tokenizer: loaded through ``transformers.AutoTokenizer`` from a hub name or a
local folder, with one-paragraph errors, and fingerprinted by content for the token cache."""

from __future__ import annotations

import hashlib
import json
import os

from tgp.errors import ConfigError


def load_tokenizer(source: object, setting: str = "data.tokenizer"):
    """``AutoTokenizer.from_pretrained(source)``; a source that cannot be loaded, or a tokenizer
    without a padding token, is a :class:`ConfigError` naming ``setting``."""
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(setting, source, "must name a tokenizer: a Hugging Face hub name (e.g. "
                          "google-bert/bert-base-uncased) or a folder holding tokenizer files.",
                          f"set {setting} to the model's hub name or to a tokenizer folder.")
    from transformers import AutoTokenizer

    from tgp.logs_hf import quiet_huggingface

    quiet_huggingface()  # transformers' warnings through tgp's handlers (run.log; the console only if verbose)
    local = os.path.isdir(os.path.expanduser(source))
    try:
        tokenizer = AutoTokenizer.from_pretrained(os.path.expanduser(source) if local else source)
    except Exception as exc:  # OSError, ValueError, the hub client's errors: the source is unusable
        reason = " ".join(str(exc).split())[:300]
        if local:
            problem = f"the folder exists but holds no tokenizer AutoTokenizer can load ({type(exc).__name__}: {reason})."
            fix = ("point it at a folder written by save_pretrained (tokenizer.json and tokenizer_config.json, or the "
                   "vocabulary files of the model's tokenizer).")
        else:
            problem = (f"no local folder of that name, and the Hugging Face hub could not provide it (offline, "
                       f"HF_HUB_OFFLINE=1, or an unknown name: {type(exc).__name__}: {reason}).")
            fix = ("check the name; on a machine with network load it once to fill the Hugging Face cache "
                   f"(python -c \"from transformers import AutoTokenizer; AutoTokenizer.from_pretrained('{source}')\"), "
                   "or set it to a local folder written by save_pretrained (set HF_HUB_OFFLINE=1 where there is no "
                   "network, to fail at once instead of retrying).")
        raise ConfigError(setting, source, problem, fix) from None
    if tokenizer.pad_token_id is None:
        raise ConfigError(setting, source, "this tokenizer has no padding token, and batches are padded per batch "
                          "with it (the model derives its attention mask from it).",
                          "use the tokenizer of an encoder model (BERT, RoBERTa, XLM-R, DistilBERT), or save one "
                          "with a pad_token set.")
    return tokenizer


def tokenizer_fingerprint(tokenizer) -> str:
    """SHA-256 of what decides a tokenizer's output: its class, its full pipeline (a fast tokenizer's
    serialized ``tokenizer.json``: vocabulary, normalizer, pre-tokenizer, post-processor) or else its
    vocabulary, its special tokens and its padding/truncation sides. Two copies of one tokenizer in
    different folders have the same fingerprint; any edit to the vocabulary changes it."""
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps({
        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "added": sorted((str(k), int(v)) for k, v in tokenizer.get_added_vocab().items()),
        "padding_side": tokenizer.padding_side, "truncation_side": tokenizer.truncation_side,
        "inputs": list(tokenizer.model_input_names),
    }).encode())
    return h.hexdigest()


def uses_segment_ids(tokenizer) -> bool:
    """Whether the tokenizer marks the second text with token-type (segment) ids, as BERT's does
    (RoBERTa's and XLM-R's do not: their models get none)."""
    return "token_type_ids" in tokenizer.model_input_names
