"""Transformer classifiers under tgp's model contract: the tokenizer folder, derived attention masks
and segment ids against the tokenizer's own, save_pretrained folders loaded through model.pretrained,
prunable parameters and exclude globs, exact masks under AdamW, the error paragraphs."""

from __future__ import annotations

import os

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from conftest import compose_cfg
from tgp.data import TextClassificationDataModule
from tgp.data.text.generated import train_wordpiece
from tgp.errors import ConfigError
from tgp.models import build_model
from tgp.models.text import TextClassifier, check_data_fits, check_sequence_fits
from tgp.pruning import MaskEnforcer, apply_mask, global_threshold, magnitude_scores, prunable_parameters

PAIRS = [("the red cat chases the small dog", "the small dog is chased by the red cat"),
         ("the old fox helps the tall owl", None),
         ("a", "the happy seal calls the sad frog and the tiny crab")]


def _encode(tok, pairs=PAIRS):
    """The tokenizer's own ids, attention mask and token types, right-padded as it pads (0s)."""
    enc = [tok(a, b) if b else tok(a) for a, b in pairs]
    width = max(len(e["input_ids"]) for e in enc)

    def pad(key, value):
        return torch.tensor([e[key] + [value] * (width - len(e[key])) for e in enc])

    return pad("input_ids", tok.pad_token_id), pad("attention_mask", 0), pad("token_type_ids", 0)


@pytest.fixture(scope="module")
def tok(roleswap):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(roleswap["tokenizer"])


def test_tokenizer_folder_loads_through_autotokenizer_as_trained(roleswap, tok):
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(os.path.join(roleswap["tokenizer"], "tokenizer.json"))
    assert tok.is_fast and len(tok) == raw.get_vocab_size()
    assert (tok.pad_token, tok.cls_token, tok.sep_token) == ("[PAD]", "[CLS]", "[SEP]")
    for a, b in PAIRS:
        ours = tok(a, b) if b else tok(a)
        ref = raw.encode(a, b) if b else raw.encode(a)
        assert ours["input_ids"] == ref.ids and ours["token_type_ids"] == ref.type_ids
    assert tok.convert_ids_to_tokens(tok("The RED cat")["input_ids"]) == ["[CLS]", "the", "red", "cat", "[SEP]"]


@pytest.mark.parametrize("arch", ["bert_tiny", "xlmr_tiny"])
def test_masks_and_segments_derived_from_the_pad_id_equal_the_tokenizers(roleswap, tok, arch):
    net = build_model(arch, 3, tokenizer=roleswap["tokenizer"]).eval()
    ids, attention, segments = _encode(tok)
    inputs = net.model_inputs(ids)
    assert torch.equal(inputs["attention_mask"], attention)
    if arch == "bert_tiny":
        assert net.segment_ids and torch.equal(inputs["token_type_ids"], segments)
        reference = {"input_ids": ids, "attention_mask": attention, "token_type_ids": segments}
    else:  # XLM-R has one segment: no token types at all
        assert not net.segment_ids and "token_type_ids" not in inputs
        reference = {"input_ids": ids, "attention_mask": attention}
    with torch.no_grad(), net.hf_model() as hf:
        expected = hf(**reference).logits  # the Hugging Face model with its head, on the tokenizer's inputs
    assert torch.allclose(net(ids), expected, atol=1e-6)


DISTILBERT = {"model_type": "distilbert", "dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}


@pytest.mark.parametrize("arch,config", [("bert_tiny", {}), ("xlmr_tiny", {}), ("bert_tiny", DISTILBERT)])
def test_forward_is_fc_of_forward_features_in_training_mode(roleswap, tok, arch, config):
    net = build_model(arch, 2, tokenizer=roleswap["tokenizer"], config=config).train()
    ids, _, _ = _encode(tok)
    torch.manual_seed(3)
    logits = net(ids)
    torch.manual_seed(3)
    features = net.forward_features(ids)
    assert features.shape == (len(PAIRS), net.fc.in_features) and isinstance(net.fc, nn.Linear)
    assert torch.equal(logits, net.fc(features))  # same dropout draws: the head's own dropout is inside
    assert net.num_classes == 2 and net.arch == arch


def test_saved_model_loads_through_model_pretrained_like_a_hub_name(tmp_path, roleswap, tok):
    torch.manual_seed(0)
    tiny = build_model("bert_tiny", 3, tokenizer=roleswap["tokenizer"]).eval()
    folder = tiny.save_pretrained(str(tmp_path / "finetuned"), tok)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(folder))
    cfg = compose_cfg(["model=bert_base", f"model.pretrained={folder}"], tmp_path)
    assert cfg.model.tokenizer == folder  # the checkpoint's own tokenizer by default
    loaded = instantiate(cfg.model, num_classes=3).eval()
    assert isinstance(loaded, TextClassifier) and loaded.arch == "bert_base"
    ids, _, _ = _encode(tok)
    assert torch.equal(loaded(ids), tiny(ids))
    # Another task's head size: the body is kept, the head re-initialized (fine-tuning a checkpoint).
    other = build_model("bert_base", 5, pretrained=folder)
    assert other.fc.out_features == 5
    body = {k: v for k, v in tiny.state_dict().items() if not k.startswith("fc.")}
    assert all(torch.equal(other.state_dict()[k], v) for k, v in body.items())


# ------------------------------------------------------------------ what may be pruned
BERT_LAYER = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
              "intermediate.dense", "output.dense"]
DISTIL_LAYER = ["attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin", "ffn.lin1", "ffn.lin2"]


@pytest.mark.parametrize("arch,config,body,layer", [
    ("bert_tiny", {}, "transformer.bert.encoder.layer", BERT_LAYER),
    ("xlmr_tiny", {}, "transformer.roberta.encoder.layer", BERT_LAYER),
    ("bert_tiny", DISTILBERT, "transformer.distilbert.transformer.layer", DISTIL_LAYER)])
def test_prunable_parameters_are_the_encoder_linears(roleswap, arch, config, body, layer):
    net = build_model(arch, 2, tokenizer=roleswap["tokenizer"], config=config)
    expected = {f"{body}.{i}.{name}.weight" for i in range(2) for name in layer}
    assert set(prunable_parameters(net)) == expected
    params = dict(net.named_parameters())
    assert all(prunable_parameters(net)[n] is params[n] for n in expected)
    # Not pruned: embeddings, LayerNorms, biases, the pooler / head dense, the classifier.
    assert "fc.weight" in params and not any("embeddings" in n or "LayerNorm" in n or n.endswith(".bias")
                                             or "pooler" in n for n in prunable_parameters(net))


def test_exclude_globs_match_the_wrapper_module_names(roleswap):
    net = build_model("bert_tiny", 2, tokenizer=roleswap["tokenizer"])
    kept = prunable_parameters(net, ["*.attention.*"])
    assert sorted(kept) == sorted(f"transformer.bert.encoder.layer.{i}.{n}.weight" for i in range(2)
                                  for n in ("intermediate.dense", "output.dense"))
    assert len(prunable_parameters(net, ["transformer.bert.encoder.layer.1.*"])) == 6
    with pytest.raises(ConfigError) as info:  # HF's own name, without the wrapper's prefix: matches nothing
        prunable_parameters(net, ["bert.encoder.layer.*"])
    msg = str(info.value)
    assert msg.startswith("pruning.exclude='bert.encoder.layer.*'") and "transformer.bert.encoder.layer" in msg
    assert "\n" not in msg


def test_conv1d_weights_are_prunable_by_default():
    from transformers import GPT2Config, GPT2ForSequenceClassification
    from transformers.pytorch_utils import Conv1D

    gpt = GPT2ForSequenceClassification(GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=32,
                                                   bos_token_id=0, eos_token_id=0))
    names = set(prunable_parameters(gpt))
    conv1d = {f"{n}.weight" for n, m in gpt.named_modules() if isinstance(m, Conv1D)}
    assert len(conv1d) == 8 and conv1d | {"score.weight"} == names


def test_masks_stay_exact_under_adamw(roleswap):
    dm = TextClassificationDataModule("roleswap", roleswap["tokenizer"], root=roleswap["root"], batch_size=16)
    torch.manual_seed(0)
    net = build_model("bert_tiny", 2, tokenizer=roleswap["tokenizer"])
    weights = prunable_parameters(net)
    mask = global_threshold(magnitude_scores(net, weights), 0.7)
    total = sum(m.numel() for m in mask.values())
    assert total - sum(int(m.sum()) for m in mask.values()) == round(0.7 * total)
    start = {n: p.detach().clone() for n, p in weights.items()}
    enforcer = MaskEnforcer()
    enforcer.bind(net, mask)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    enforcer.attach([opt])
    net.train()
    for step, (x, y) in enumerate(dm.train_dataloader()):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        enforcer.mask_grads_()
        opt.step()
        if step == 3:
            break
    enforcer.detach()
    for n, p in weights.items():
        assert torch.count_nonzero(p[~mask[n]]) == 0, n  # pruned: exactly zero after AdamW's decay and moments
        assert not torch.equal(p[mask[n]], start[n][mask[n]]), n  # kept: trained
    dense = build_model("bert_tiny", 2, tokenizer=roleswap["tokenizer"])
    apply_mask(dense, mask)
    for n, p in prunable_parameters(dense).items():
        assert torch.equal(p != 0, mask[n] & (p != 0)) and torch.count_nonzero(p[~mask[n]]) == 0


# ------------------------------------------------------------------ errors
def test_tokenizer_that_does_not_match_the_model_is_refused(tmp_path, roleswap, tok):
    small = train_wordpiece(["ab ba", "aab"], str(tmp_path / "small_tokenizer"), vocab_size=40)
    net = build_model("bert_tiny", 2, tokenizer=small)
    folder = net.save_pretrained(str(tmp_path / "small_model"))
    with pytest.raises(ConfigError) as info:
        build_model("bert_base", 2, pretrained=folder, tokenizer=roleswap["tokenizer"])
    msg = str(info.value)
    assert msg.startswith("model.tokenizer=") and f"{len(tok)} tokens" in msg
    assert f"{net.transformer.get_input_embeddings().num_embeddings} rows" in msg and "\n" not in msg


def test_data_with_another_tokenizer_than_the_model_is_refused(tmp_path, roleswap):
    small = train_wordpiece(["ab ba", "aab"], str(tmp_path / "small_tokenizer"), vocab_size=40)
    dm = TextClassificationDataModule("roleswap", roleswap["tokenizer"], root=roleswap["root"])
    check_data_fits(build_model("bert_tiny", 2, tokenizer=roleswap["tokenizer"]), dm)  # the same tokenizer: fine
    with pytest.raises(ConfigError) as info:
        check_data_fits(build_model("bert_tiny", 2, tokenizer=small), dm)
    msg = str(info.value)
    assert msg.startswith("data.tokenizer=") and "embedding has" in msg and "\n" not in msg


def test_bad_checkpoints_and_settings_are_one_paragraph(tmp_path, roleswap):
    (tmp_path / "empty").mkdir()
    cases = [
        (lambda: build_model("bert_base", 2, pretrained=str(tmp_path / "empty")), "model.pretrained=", "save_pretrained"),
        (lambda: build_model("xlmr_base", 2), "model.pretrained='FacebookAI/xlm-roberta-base'", "HF_HUB_OFFLINE"),
        (lambda: build_model("bert_tiny", 2, width=8, tokenizer=roleswap["tokenizer"]), "model.width=8", "config"),
        (lambda: build_model("bert_tiny", 2), "model.tokenizer=None", "tokenizer folder"),
        (lambda: build_model("bert_tiny", 2, tokenizer=roleswap["tokenizer"], config={"hidden_act": 3.5,
                                                                                      "model_type": "nope"}),
         "model.config=", "field names"),
        (lambda: check_sequence_fits(build_model("bert_tiny", 2, tokenizer=roleswap["tokenizer"]), 600),
         "data.max_length=600", "at most 512"),
    ]
    for build, start, fix in cases:
        with pytest.raises(ConfigError) as info:
            build()
        msg = str(info.value)
        assert msg.startswith(start) and fix in msg and "\n" not in msg, msg


@pytest.mark.parametrize("name,hub", [("bert_base", "google-bert/bert-base-uncased"),
                                      ("xlmr_base", "FacebookAI/xlm-roberta-base"),
                                      ("distilbert", "distilbert/distilbert-base-uncased"),
                                      ("bert_small", "google/bert_uncased_L-4_H-512_A-8")])
def test_hub_model_configs_name_their_checkpoint_and_tokenizer(tmp_path, name, hub):
    cfg = compose_cfg([f"model={name}", "data=glue"], tmp_path)
    assert cfg.model.name == name and cfg.model.pretrained == hub
    assert cfg.model.tokenizer == hub and cfg.data.tokenizer == hub


@pytest.mark.parametrize("model,data,task", [("bert_tiny", "roleswap", "roleswap"), ("xlmr_tiny", "roleswap", "roleswap")])
def test_tiny_model_configs_train_offline_on_the_generated_task(tmp_path, roleswap, model, data, task):
    cfg = compose_cfg([f"model={model}", f"data={data}", f"paths.data_dir={roleswap['root']}"], tmp_path)
    dm = instantiate(cfg.data)
    net = instantiate(cfg.model, num_classes=dm.num_classes)
    x, y = next(iter(dm.train_dataloader()))
    assert dm.name == task and net(x).shape == (x.shape[0], 2)
    nn.functional.cross_entropy(net(x), y).backward()
    assert all(p.grad is not None for p in prunable_parameters(net).values())
