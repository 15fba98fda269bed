"""A Lightning callback that saves every training batch each rank receives (``<folder>/rank<r>_step<i>.pt``):
what the tests compare between a DDP run and a one-process run."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class BatchRecorder(Callback):
    def __init__(self, folder: str):
        self.folder = str(folder)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        folder = Path(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        x, y = batch[0], batch[1]
        torch.save({"x": x.detach().cpu(), "y": y.detach().cpu()},
                   folder / f"rank{trainer.global_rank}_epoch{trainer.current_epoch}_step{batch_idx}.pt")
