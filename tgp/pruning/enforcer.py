"""Keeping pruned weights at exactly zero while a masked network trains."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor, nn

from tgp.pruning.mask import Mask, masked_parameters


def _buffer_name(param_name: str) -> str:
    return param_name.replace(".", "__")


class MaskBuffers(nn.Module):
    """A mask held as (non-trainable) buffers, so it moves with the model and lives in every checkpoint."""

    def __init__(self, mask: Mask):
        super().__init__()
        self.param_names = list(mask)
        for name, m in mask.items():
            self.register_buffer(_buffer_name(name), m.detach().to(torch.bool).clone())

    def as_dict(self) -> Mask:
        return {n: getattr(self, _buffer_name(n)) for n in self.param_names}


class MaskEnforcer(L.Callback):
    """Fixed-mask training: pruned weights never come back.

    Two hooks act on every optimizer step of a module that has a mask (``pl_module.mask``):

    * before the step (Lightning's ``on_before_optimizer_step``, i.e. after backward and the
      DDP all-reduce, before gradient clipping): ``g ← g ⊙ m`` for every masked gradient;
    * after the step (a ``torch.optim`` step post-hook): ``θ ← θ ⊙ m``. Weight decay, momentum
      and Adam moments would otherwise move pruned weights off zero even with zero gradients.

    Both are a single ``torch._foreach_mul_`` over all masked tensors, not a Python loop of
    kernels, so a masked step costs about what a dense step does. A module whose mask changes
    during training (gradual pruning) bumps ``pl_module.mask_version``; the enforcer re-binds
    when it sees a new version (an int compare per step, no device sync).
    """

    def __init__(self) -> None:
        self._handles: list = []
        self._params: list[Tensor] = []
        self._masks: list[Tensor] = []
        self._version: int | None = None

    # -- plain-torch API (also what the Lightning hooks below call) ------------------------------
    def bind(self, net: nn.Module, mask: Mask | None) -> bool:
        """Remember which tensors to mask (call again after the mask changes); zero pruned weights now."""
        if not mask:
            self._params, self._masks = [], []
            return False
        params, masks = masked_parameters(net, mask)
        self._params = params
        self._masks = [m.to(device=p.device, dtype=p.dtype) for p, m in zip(params, masks)]
        self.mask_weights_()
        return True

    def attach(self, optimizers) -> None:
        """Re-mask the weights after every ``step()`` of these optimizers."""
        for opt in optimizers:
            self._handles.append(opt.register_step_post_hook(lambda *_: self.mask_weights_()))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @torch.no_grad()
    def mask_grads_(self) -> None:
        grads = [p.grad for p in self._params]
        if grads and all(g is not None for g in grads):
            torch._foreach_mul_(grads, self._masks)
        else:
            for g, m in zip(grads, self._masks):
                if g is not None:
                    g.mul_(m)

    @torch.no_grad()
    def mask_weights_(self) -> None:
        if self._params:
            torch._foreach_mul_(self._params, self._masks)

    # -- Lightning hooks -------------------------------------------------------------------------
    def refresh(self, pl_module) -> None:
        """Re-read ``pl_module.mask`` (for methods whose mask changes during training)."""
        self.bind(pl_module.net, pl_module.mask)
        self._version = getattr(pl_module, "mask_version", None)

    def on_train_start(self, trainer, pl_module) -> None:
        self.refresh(pl_module)
        self.attach(trainer.optimizers)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if getattr(pl_module, "mask_version", None) != self._version:
            self.refresh(pl_module)
        self.mask_grads_()

    def on_train_end(self, trainer, pl_module) -> None:
        self.detach()
