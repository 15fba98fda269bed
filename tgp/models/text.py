"""Transformer sequence classifiers (Hugging Face ``transformers``) behind tgp's model contract.

``build_model("bert_base", num_classes, pretrained=...)`` loads
``AutoModelForSequenceClassification.from_pretrained(<hub name or local folder>)`` — the same code
path for both — and ``bert_tiny``/``xlmr_tiny`` build a random-init model from a config, with no
download. Either way the result is a :class:`TextClassifier`:

* ``forward(input_ids) -> logits``; the attention mask is ``input_ids != pad_id`` and, for
  tokenizers that mark the second text (BERT's), the token-type ids are 1 after the first
  separator — so a batch stays ``(token ids, labels)`` and nothing else in tgp needs a text case.
* ``forward_features(input_ids) -> [B, D]``: the sequence representation the classifier reads
  (BERT: the pooled ``[CLS]`` state; RoBERTa/XLM-R: the ``<s>`` state through the head's dense +
  tanh; DistilBERT: through ``pre_classifier`` + ReLU), after the head's dropout, so
  ``forward(x) == fc(forward_features(x))`` in training mode too.
* ``fc``: the final ``nn.Linear`` of the model's classification head, taken out of the Hugging
  Face model (which gets an ``Identity`` in its place); ``arch``, ``num_classes``.
* ``prunable_modules()``: the encoder's ``Linear`` (and ``Conv1D``) layers — attention Q, K, V and
  output, FFN in and out (ours, as the SDP paper's setting reads); embeddings, LayerNorms, biases,
  the pooler and the classification head are not pruned. Names are the wrapper's module names
  (``transformer.bert.encoder.layer.0.attention.self.query``), which ``pruning.exclude`` globs match.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from tgp.errors import ConfigError
from tgp.models.registry import register_model

# The checkpoints of conf/model/*.yaml (model.pretrained overrides): paper's for bert_base (GLUE) and
# xlmr_base (XGLUE); distilbert is the ~6x-larger-than-sparse distilled comparison the SDP abstract
# names, bert_small a dense small BERT (Turc et al. 2019) for the equal-parameters comparison (ours).
HUB_NAMES = {
    "bert_base": "google-bert/bert-base-uncased",
    "xlmr_base": "FacebookAI/xlm-roberta-base",
    "distilbert": "distilbert/distilbert-base-uncased",
    "bert_small": "google/bert_uncased_L-4_H-512_A-8",
}

# Random-init configs for tests and the offline demo (ours): small enough to train on a CPU.
TINY_CONFIGS = {
    "bert_tiny": {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "intermediate_size": 128, "max_position_embeddings": 512},
    "xlmr_tiny": {"model_type": "xlm-roberta", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "intermediate_size": 128, "max_position_embeddings": 514, "type_vocab_size": 1},
}


def _weight_types() -> tuple[type, ...]:
    from transformers.pytorch_utils import Conv1D

    return (nn.Linear, Conv1D)


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _set(module: nn.Module, path: str, value: nn.Module) -> None:
    *parents, last = path.split(".")
    setattr(_get(module, ".".join(parents)) if parents else module, last, value)


def _num_layers(config) -> int | None:
    for attr in ("num_hidden_layers", "n_layers", "n_layer", "num_layers"):
        if isinstance(getattr(config, attr, None), int):
            return getattr(config, attr)
    return None


class TextClassifier(nn.Module):
    """A Hugging Face ``*ForSequenceClassification`` model under tgp's model contract (module docstring)."""

    modality = "text"  # reads token ids: what a datamodule's check_model compares with its own

    def __init__(self, hf_model: nn.Module, *, pad_id: int, sep_id: int | None, segment_ids: bool, arch: str):
        super().__init__()
        prefix = hf_model.base_model_prefix
        head = [n for n, m in hf_model.named_modules() if isinstance(m, _weight_types())
                and n and not n.startswith(f"{prefix}.")]
        if not head:
            raise ValueError(f"{type(hf_model).__name__} has no classification head outside its {prefix!r} body")
        self.head_path = head[-1]  # the head's last Linear: BERT classifier, RoBERTa classifier.out_proj
        fc = _get(hf_model, self.head_path)
        _set(hf_model, self.head_path, nn.Identity())
        self.transformer = hf_model
        self.fc = fc  # registered after the transformer: the model's last Linear (classifier_name finds it)
        self.arch = arch
        self.num_classes = int(fc.out_features)
        self.pad_id, self.sep_id = int(pad_id), sep_id
        self.segment_ids = bool(segment_ids) and sep_id is not None
        self.config = hf_model.config
        self._encoder_layers = self._find_encoder_layers()

    # -- the model contract ------------------------------------------------------------------------
    def model_inputs(self, input_ids: Tensor) -> dict[str, Tensor]:
        """The Hugging Face inputs a batch of padded token ids stands for: ``attention_mask`` = not
        padding; ``token_type_ids`` (when the tokenizer uses segments) = 1 strictly after the first
        separator and before the padding, as the tokenizer marks ``[CLS] A [SEP] B [SEP]``."""
        mask = input_ids != self.pad_id
        inputs = {"input_ids": input_ids, "attention_mask": mask.long()}
        if self.segment_ids:
            sep = (input_ids == self.sep_id).long()
            after_first = (sep.cumsum(1) - sep) > 0
            inputs["token_type_ids"] = (after_first & mask).long()
        return inputs

    def forward_features(self, input_ids: Tensor) -> Tensor:
        """The representation the classifier reads, ``[B, D]`` (the head up to its last Linear)."""
        return self.transformer(**self.model_inputs(input_ids)).logits

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.fc(self.forward_features(input_ids))

    @property
    def classifier(self) -> nn.Module:
        return self.fc

    @property
    def max_length(self) -> int:
        """The longest input the position embeddings cover (RoBERTa's reserve ``pad_id + 1`` slots)."""
        n = int(getattr(self.config, "max_position_embeddings", 0) or getattr(self.config, "n_positions", 0))
        return n - (self.pad_id + 1) if self.config.model_type in ("roberta", "xlm-roberta", "camembert") else n

    # -- pruning -------------------------------------------------------------------------------------
    def _find_encoder_layers(self) -> str:
        """The wrapper name of the encoder's layer list: the ModuleList of the body holding one module
        per Transformer layer (``transformer.bert.encoder.layer``, ``transformer.distilbert.transformer.layer``)."""
        n = _num_layers(self.config)
        for name, module in self.named_modules():
            if isinstance(module, nn.ModuleList) and len(module) == n and name.startswith("transformer."):
                return name
        raise ValueError(f"no encoder layer list of {n} layers found in {type(self.transformer).__name__}")

    def prunable_modules(self) -> dict[str, nn.Module]:
        """The encoder's Linear/Conv1D layers (attention Q, K, V, output; FFN in/out), by wrapper name."""
        types = _weight_types()
        prefix = self._encoder_layers + "."
        return {n: m for n, m in self.named_modules() if n.startswith(prefix) and isinstance(m, types)}

    # -- saving --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def hf_model(self) -> Iterator[nn.Module]:
        """The Hugging Face model with its head Linear back in place (shared weights, for saving)."""
        _set(self.transformer, self.head_path, self.fc)
        try:
            yield self.transformer
        finally:
            _set(self.transformer, self.head_path, nn.Identity())

    def save_pretrained(self, folder: str, tokenizer=None) -> str:
        """Save as a Hugging Face folder (``config.json``, weights, and the tokenizer when given) that
        ``model.pretrained=<folder>`` loads like a hub checkpoint."""
        with self.hf_model() as model:
            model.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        return folder


# ------------------------------------------------------------------ checks
def check_tokenizer_fits(hf_model: nn.Module, tokenizer, source: object, setting: str = "model.tokenizer") -> None:
    """A tokenizer whose ids the model cannot embed, or whose pad id is not the model's, is a
    :class:`ConfigError` (a tokenizer from another model)."""
    rows = hf_model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ConfigError(setting, source, f"this tokenizer has {len(tokenizer)} tokens but the model's embedding has "
                          f"{rows} rows ({hf_model.config.model_type}): it is not the tokenizer the model was "
                          "trained with, and ids past the table would fail or read garbage.",
                          "use the model's own tokenizer (the same hub name or folder as model.pretrained).")
    pad = getattr(hf_model.config, "pad_token_id", None)
    if pad is not None and int(pad) != int(tokenizer.pad_token_id):
        raise ConfigError(setting, source, f"this tokenizer pads with id {tokenizer.pad_token_id} but the model's "
                          f"padding id is {pad}: the model would attend to padding (and RoBERTa-style models "
                          "would shift their positions).",
                          "use the model's own tokenizer (the same hub name or folder as model.pretrained).")


def check_sequence_fits(model: TextClassifier, max_length: int, setting: str = "data.max_length") -> None:
    """Rows longer than the model's position embeddings are a :class:`ConfigError`."""
    if int(max_length) > model.max_length:
        raise ConfigError(setting, max_length, f"rows of that many tokens do not fit {model.arch}'s "
                          f"{model.max_length} position embeddings.", f"set {setting} to at most {model.max_length}.")


def check_data_fits(model: TextClassifier, datamodule) -> None:
    """The model can read the datamodule's batches: its tokenizer's ids fit the embedding, it pads
    with the model's pad id (from which the model derives its attention mask) and its rows fit the
    position embeddings. A :class:`ConfigError` naming the data setting otherwise (e.g. a
    ``data.tokenizer`` overridden away from ``model.tokenizer``)."""
    check_tokenizer_fits(model.transformer, datamodule.tokenizer, datamodule.tokenizer_source, "data.tokenizer")
    if int(datamodule.pad_id) != model.pad_id:
        raise ConfigError("data.tokenizer", datamodule.tokenizer_source, f"the data is padded with id "
                          f"{datamodule.pad_id} but the model reads id {model.pad_id} as padding (its own tokenizer's).",
                          "use one tokenizer for both: leave data.tokenizer at ${model.tokenizer}.")
    check_sequence_fits(model, datamodule.max_length)


# ------------------------------------------------------------------ constructors
def _wrap(hf_model: nn.Module, tokenizer, tokenizer_source: object, arch: str) -> TextClassifier:
    from tgp.data.text.tokenizer import uses_segment_ids

    check_tokenizer_fits(hf_model, tokenizer, tokenizer_source)
    return TextClassifier(hf_model, pad_id=tokenizer.pad_token_id, sep_id=tokenizer.sep_token_id,
                          segment_ids=uses_segment_ids(tokenizer) and getattr(hf_model.config, "type_vocab_size", 0) > 1,
                          arch=arch)


def _no_width(arch: str, width) -> None:
    if width is not None:
        raise ConfigError("model.width", width, f"{arch} is a Transformer; its size comes from its checkpoint or config.",
                          "remove model.width (set model.config.hidden_size etc. for a random-init model).")


def pretrained_transformer(num_classes: int, in_channels: int = 3, width: int | None = None, *,
                           pretrained: str | None = None, tokenizer: str | None = None, arch: str = "transformer",
                           dropout: float | None = None) -> TextClassifier:
    """``AutoModelForSequenceClassification.from_pretrained(pretrained, num_labels=num_classes)`` (a hub
    name or a folder written by ``save_pretrained``), in float32; a head of another size is
    re-initialized, as fine-tuning a checkpoint on a new task does. ``tokenizer`` defaults to
    ``pretrained``. ``in_channels`` is ignored (token ids have none); ``dropout`` overrides the
    checkpoint's hidden dropout (null: the checkpoint's, 0.1 for BERT)."""
    from transformers import AutoModelForSequenceClassification

    from tgp.data.text.tokenizer import load_tokenizer
    from tgp.logs_hf import quiet_huggingface

    quiet_huggingface()  # its load report and "Loading weights" bar: run.log only, unless verbose=true
    _no_width(arch, width)
    source = pretrained or HUB_NAMES.get(arch)
    if not source:
        raise ConfigError("model.pretrained", pretrained, f"{arch} needs a checkpoint.",
                          "set model.pretrained to a hub name or a folder written by save_pretrained.")
    local = os.path.isdir(os.path.expanduser(source))
    extra = {"hidden_dropout_prob": float(dropout)} if dropout is not None else {}
    try:
        hf = AutoModelForSequenceClassification.from_pretrained(
            os.path.expanduser(source) if local else source, num_labels=num_classes, ignore_mismatched_sizes=True,
            dtype=torch.float32, **extra)
    except Exception as exc:  # OSError, ValueError, the hub client's errors: the checkpoint is unusable
        reason = " ".join(str(exc).split())[:300]
        if local:
            problem = f"the folder holds no sequence-classification checkpoint transformers can load ({type(exc).__name__}: {reason})."
            fix = "point it at a folder written by save_pretrained (config.json and the weights)."
        else:
            problem = (f"no local folder of that name, and the Hugging Face hub could not provide it (offline, "
                       f"HF_HUB_OFFLINE=1, or an unknown name: {type(exc).__name__}: {reason}).")
            fix = ("check the name; on a machine with network load it once to fill the Hugging Face cache (python -c "
                   f"\"from transformers import AutoModelForSequenceClassification as M; M.from_pretrained('{source}')\"), "
                   "or set model.pretrained to a local folder written by save_pretrained (set HF_HUB_OFFLINE=1 where there is no "
                   "network, to fail at once instead of retrying).")
        raise ConfigError("model.pretrained", source, problem, fix) from None
    tok_source = tokenizer or source
    return _wrap(hf, load_tokenizer(tok_source, "model.tokenizer"), tok_source, arch)


def random_transformer(num_classes: int, in_channels: int = 3, width: int | None = None, *, tokenizer: str | None = None,
                       config: Mapping | None = None, arch: str = "bert_tiny") -> TextClassifier:
    """A randomly initialized ``*ForSequenceClassification`` from a config (no download): the
    architecture's :data:`TINY_CONFIGS` entry updated with ``config`` (another ``model_type`` starts
    from that family's defaults); the vocabulary size and pad id come from ``tokenizer`` (a hub name
    or folder, e.g. the generated task's WordPiece)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from tgp.data.text.tokenizer import load_tokenizer
    from tgp.logs_hf import quiet_huggingface

    quiet_huggingface()
    _no_width(arch, width)
    if not tokenizer:
        raise ConfigError("model.tokenizer", tokenizer, f"{arch} is built from a config and takes its vocabulary size "
                          "and padding id from a tokenizer.", "set model.tokenizer to a hub name or tokenizer folder.")
    tok = load_tokenizer(tokenizer, "model.tokenizer")
    base = TINY_CONFIGS.get(arch, {})
    if dict(config or {}).get("model_type", base.get("model_type")) != base.get("model_type"):
        base = {}  # another family: its own config class's defaults, not this arch's sizes
    fields = {**base, **dict(config or {})}
    model_type = fields.pop("model_type", None)
    if not model_type:
        raise ConfigError("model.config.model_type", None, "a random-init model needs its family.",
                          "set model.config.model_type (bert, xlm-roberta, distilbert, ...).")
    fields.update(vocab_size=len(tok), pad_token_id=tok.pad_token_id, num_labels=num_classes)
    try:
        hf_config = AutoConfig.for_model(model_type, **fields)
    except (ValueError, TypeError) as exc:
        raise ConfigError("model.config", dict(config or {}), f"not a valid {model_type} config ({exc}).",
                          "use the field names of the transformers config class of that family.") from None
    hf = AutoModelForSequenceClassification.from_config(hf_config)  # initialized from torch's global RNG
    return _wrap(hf, tok, tokenizer, arch)


for _arch in HUB_NAMES:
    register_model(_arch)(functools.partial(pretrained_transformer, arch=_arch))
for _arch in TINY_CONFIGS:
    register_model(_arch)(functools.partial(random_transformer, arch=_arch))
