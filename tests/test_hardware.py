"""Hardware-independent meaning: ``data.batch_size`` is the global batch (split over the DDP ranks),
BatchNorm statistics are those of the global batch under DDP, and a stage records what it trained with."""

from __future__ import annotations

import atexit
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.demos.boring_classes import BoringModel
from torch import nn

from tests.conftest import compose_cfg, read_json, run_cli
from tgp.data.base import per_rank_batch
from tgp.errors import ConfigError, TGPError
from tgp.training import AllReduceBatchNormSync, Training

STAGE = ["experiment=smoke", "trainer.limit_train_batches=3", "data.batch_size=32", "stop_after=teacher"]


def test_per_rank_batch_splits_the_global_batch():
    assert per_rank_batch(32, 1) == 32
    assert per_rank_batch(32, 2) == 16
    assert per_rank_batch(256, 8) == 32
    with pytest.raises(ConfigError) as e:
        per_rank_batch(30, 4)
    assert e.value.setting == "data.batch_size" and e.value.value == 30
    assert "multiple of 4" in str(e.value) and "Fix:" in str(e.value)
    with pytest.raises(ConfigError, match="data.eval_batch_size"):
        per_rank_batch(10, 3, "data.eval_batch_size")


def test_batch_that_does_not_divide_stops_before_training(tmp_path):
    proc = run_cli([*STAGE, "trainer=ddp_sim", "data.batch_size=33"], tmp_path, check=False, timeout=300)
    assert proc.returncode == TGPError.exit_code, proc.stderr[-3000:]
    assert "data.batch_size=33" in proc.stderr
    assert not (tmp_path / "run" / "teacher" / "result.json").exists()


@pytest.mark.parametrize("trainer, synced", [("ddp_sim", True), ("cpu", False)])
def test_batchnorm_is_synchronized_whenever_there_are_ranks(trainer, synced, tmp_path):
    cfg = compose_cfg(["experiment=smoke", f"trainer={trainer}", "logger=none"], tmp_path)
    t = Training(cfg, None).trainer("teacher", tmp_path)
    assert isinstance(t.strategy.__dict__.get("_layer_sync"), AllReduceBatchNormSync) is synced


def _bn_worker(rank: int, world: int, init: str, x: torch.Tensor, out: dict) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        bn = AllReduceBatchNormSync().apply(nn.Sequential(nn.BatchNorm2d(3)))
        bn.train()
        part = x.chunk(world)[rank].clone().requires_grad_(True)
        y = bn(part)
        (y * torch.arange(y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        out[rank] = (y.detach(), part.grad, bn[0].running_mean.clone(), bn[0].running_var.clone(),
                     bn[0].weight.grad.clone(), type(AllReduceBatchNormSync().revert(bn)[0]).__name__)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned interpreters import torch: ~20 s on 2 cores
def test_all_reduce_batchnorm_equals_batchnorm_of_the_global_batch(tmp_path):
    """On CPUs (torch's SyncBatchNorm is GPU-only) 2 gloo ranks with half a batch each normalize,
    track running statistics and backpropagate like one BatchNorm over the whole batch."""
    x = torch.randn(8, 3, 5, 5)
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_bn_worker, args=(2, f"file://{tmp_path}/store", x, out), nprocs=2, join=True)
        out = dict(out)
    ref = nn.BatchNorm2d(3).train()
    xr = x.clone().requires_grad_(True)
    y = ref(xr)
    # the same per-rank loss weights as in the workers (each rank weights its own half 0..n-1)
    w = torch.cat([torch.arange(x[:4].numel(), dtype=x.dtype).view_as(x[:4])] * 2)
    (y * w).sum().backward()
    got_y = torch.cat([out[0][0], out[1][0]])
    got_grad = torch.cat([out[0][1], out[1][1]])
    assert torch.allclose(got_y, y.detach(), atol=1e-5)
    assert torch.allclose(got_grad, xr.grad, atol=1e-4)
    for r in (0, 1):
        assert torch.allclose(out[r][2], ref.running_mean, atol=1e-6)
        assert torch.allclose(out[r][3], ref.running_var, atol=1e-6)
        assert out[r][5] == "BatchNorm2d"  # reverted: state_dict keys and module types as before
    # each rank's weight gradient is its own loss's; DDP averages them, the sum is the full batch's
    assert torch.allclose(out[0][4] + out[1][4], ref.weight.grad, atol=1e-3)


@pytest.mark.slow
def test_ddp_stage_records_world_size_and_per_rank_batch(tmp_path):
    """The same stage on 2 gloo processes (ddp_spawn) and on 1: the global batch is split."""
    run_cli([*STAGE, "trainer=ddp_sim"], tmp_path / "ddp", timeout=600)
    run_cli(STAGE, tmp_path / "one", timeout=600)
    ddp = read_json(tmp_path / "ddp" / "run" / "teacher" / "result.json")
    one = read_json(tmp_path / "one" / "run" / "teacher" / "result.json")
    assert (ddp["world_size"], ddp["per_rank_batch"]) == (2, 16)
    assert (one["world_size"], one["per_rank_batch"]) == (1, 32)
    assert ddp["epochs"] == one["epochs"] == 1


class _GroupStateAtExit(Callback):
    """Writes, from the very last ``atexit`` handler of each rank, whether its process group was still alive."""

    def __init__(self, folder: Path):
        self.folder = folder

    def setup(self, trainer, pl_module, stage: str) -> None:
        # registered before tgp's own callbacks run their setup, so (LIFO) it runs after them at exit
        path = self.folder / f"rank{trainer.global_rank}.txt"
        atexit.register(lambda: path.write_text(str(dist.is_initialized())))


@pytest.mark.slow  # two spawned interpreters import torch: ~20 s on 2 cores
def test_ddp_ranks_exit_with_their_process_group_destroyed(tmp_path):
    """A rank that exits with its gloo group alive can abort during interpreter finalization
    (SIGABRT after the stage finished); every tgp Trainer destroys the group at exit instead."""
    cfg = compose_cfg(["experiment=smoke", "trainer=ddp_sim", "logger=none"], tmp_path)
    trainer = Training(cfg, None).trainer("prune", tmp_path, callbacks=[_GroupStateAtExit(tmp_path)])
    trainer.validate(BoringModel(), verbose=False)
    assert {p.name: p.read_text() for p in tmp_path.glob("rank*.txt")} == {"rank0.txt": "False", "rank1.txt": "False"}
