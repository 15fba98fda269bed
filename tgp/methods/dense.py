"""The dense comparison (``method=dense``; ours): the student trained dense for the same budget a pruning
method gets, with no pruning at all.

Stages::

    dense    method.dense_epochs at method.dense_lr from the seeded initialization (a pretrained
             Transformer: fine-tuned from its pretrained weights) — the same stage as SDP's first
             (:func:`tgp.blocks.dense_stage`), shared with it in the stage store
    retrain  retrain.epochs at retrain.lr, dense, from the ``dense`` weights with a fresh optimizer and
             schedule: SDP's fine-tuning budget without its pruning and without L_CC

So its total budget is SDP's (``dense_epochs + retrain.epochs``), and with the defaults
(``dense_epochs = kd_pretrain.epochs``) also the student's budget of the one-shot methods. Its mask is
every prunable weight kept (``retrain/mask.pt``, sparsity 0) and its metrics row says
``target_sparsity`` 0: ``pruning.*`` is not read, so a sweep over sparsities runs it once (the other
jobs reuse its stages).

Its use: the dense rows of a comparison — the unpruned reference of the same architecture, and the
comparisons the SDP paper names (a dense smaller Transformer with about the nonzero parameters of a
pruned one, ``model=bert_small``; a dense distilled network about 6× larger, ``model=distilbert``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from tgp.blocks import dense_stage, load_stage_net, make_module, task_loss
from tgp.methods.registry import MethodOutputs, MethodSpec, register
from tgp.pruning.mask import prunable_parameters, sparsity_report, write_mask
from tgp.stages import StageKind

DENSE_RETRAIN = StageKind("dense_retrain", folder="retrain", reads=("model", "retrain.epochs", "retrain.lr"))


@dataclass
class DenseSettings:  # types only; the values and their provenance: conf/method/dense.yaml
    dense_epochs: int  # the first stage (SDP's dense stage)
    dense_lr: float


def run_dense(job) -> MethodOutputs:
    """Dense training (SDP's first stage), then dense fine-tuning for the sparse budget."""
    dense = dense_stage(job)

    def retrain(folder: Path, cfg: DictConfig) -> dict:
        r = cfg.retrain
        net = load_stage_net(job, cfg.model, dense)
        module = make_module(job, net, task_loss(job.dm), "retrain", r.epochs, r.lr)
        result = job.training.fit("retrain", folder, module, int(r.epochs))
        # Every prunable weight kept: the run folder's mask.pt and sparsity report say "dense".
        mask = {n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(module.net).items()}
        write_mask(mask, folder, sparsity_report(mask, module.net, target=0.0) | {"score": None})
        return result

    job.run(DENSE_RETRAIN, retrain, parent=dense)
    return MethodOutputs(net_stage=DENSE_RETRAIN.folder_name, mask_stage=DENSE_RETRAIN.folder_name)


DENSE_METHOD = register(MethodSpec(
    name="dense", run=run_dense, settings=DenseSettings, prunes=False,
    summary="no pruning: the dense student trained for the same budget (SDP's dense stage, then retrain.epochs dense)",
    stages=("dense", "retrain"), epochs=("method.dense_epochs", "retrain.epochs"), dense_stage="dense",
    color="#17becf",
))
