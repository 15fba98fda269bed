"""Hugging Face's console output under tgp's console rules (:mod:`tgp.logs`), importable without Lightning
(the tokenizer and token-cache code use it in light processes)."""

from __future__ import annotations

import sys

_verbose = False  # the job's ``verbose``, for the calls made when transformers is first imported


def quiet_huggingface(verbose: bool | None = None) -> None:
    """Route ``transformers``' log records to the root handlers (Hydra's console and ``run.log``, where
    :class:`tgp.logs._ConsoleFilter` keeps its warnings off the console unless verbose) instead of its own stderr
    handler, and switch its and ``huggingface_hub``'s progress bars off unless ``verbose`` (default: the
    job's setting). A no-op until ``transformers`` is imported: the text modules call it right after
    importing it (:func:`tgp.models.text` constructors, :func:`tgp.data.text.tokenizer.load_tokenizer`)."""
    global _verbose
    if verbose is not None:
        _verbose = bool(verbose)
    verbose = _verbose
    if "transformers" not in sys.modules:
        return
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    if verbose:
        hf_logging.enable_progress_bar()
        hub_utils.enable_progress_bars()
    else:
        hf_logging.disable_progress_bar()
        hub_utils.disable_progress_bars()
