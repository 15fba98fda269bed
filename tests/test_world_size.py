"""The same stage on 1 or N processes: the global batches are a function of (seed, stage, epoch) only,
each DDP rank trains on its contiguous share of every one-process batch, so a stage's key may leave the
world size out — except where a result depends on it (per-rank state), which then joins the key."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import compose_cfg, run_cli
from tgp.data.base import EpochSampler
from tgp.data.global_batches import GlobalBatchSampler, RankShard, rank_share, running_ranks
from tgp.stages import KINDS, stage_key


def test_rank_shares_split_contiguously_and_cover_once():
    for n in (0, 1, 7, 8, 33):
        for world in (1, 2, 3, 8):
            spans = [rank_share(n, r, world) for r in range(world)]
            assert spans[0][0] == 0 and spans[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, in rank order
            assert max(e - s for s, e in spans) - min(e - s for s, e in spans) <= 1


def test_rank_batches_of_the_torch_path_are_the_one_process_batches_augmentation_included(tmp_path):
    """Digits with its random crops: rank 0's and rank 1's batches, concatenated, are the one-process batches
    pixel for pixel (each sample's augmentation is seeded by the epoch order, not by the process)."""
    from hydra.utils import instantiate

    cfg = compose_cfg(["experiment=smoke"], tmp_path)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    dm.shuffle_seed = 11
    one = list(dm.train_dataloader())  # no Trainer: one process
    n, batch = len(dm.data_train), dm.batch_size
    ranks = []
    for rank in (0, 1):
        sampler = EpochSampler(n, dm.shuffle_seed)
        ranks.append(list(DataLoader(dm.data_train, batch_sampler=GlobalBatchSampler(sampler, batch, rank, 2, True))))
    assert len(one) == len(ranks[0]) == len(ranks[1]) == n // batch
    for (x, y), (x0, y0), (x1, y1) in zip(one, *ranks):
        assert x0.shape[0] == x1.shape[0] == batch // 2
        assert torch.equal(torch.cat([y0, y1]), y) and torch.equal(torch.cat([x0, x1]), x)
    shards = [list(RankShard(10, r, 3)) for r in range(3)]
    assert sum(shards, []) == list(range(10))


def test_loaders_outside_a_running_distributed_fit_see_the_whole_split():
    assert running_ranks(None) == (0, 1)  # e.g. a stage's test-set evaluation after its DDP fit


def test_world_size_joins_the_key_only_of_a_stage_whose_result_depends_on_it(tmp_path):
    from tgp.methods import load_all

    load_all()
    kd, teacher = KINDS["kd_pretrain"], KINDS["teacher"]

    def keys(*overrides):
        one = compose_cfg(["experiment=smoke", *overrides], tmp_path)
        ddp = compose_cfg(["experiment=smoke", "trainer=ddp_sim", *overrides], tmp_path)
        return {k.name: (stage_key(one, k), stage_key(ddp, k)) for k in (kd, teacher)}

    same = keys()
    assert all(a == b for a, b in same.values())  # the global batches make them equal: one key
    batch = keys("distill.confidence=batch")  # β = the mean over each rank's share of a batch: per rank
    assert batch["kd_pretrain"][0] != batch["kd_pretrain"][1] and batch["teacher"][0] == batch["teacher"][1]
    assert batch["kd_pretrain"][0] == stage_key(compose_cfg(["experiment=smoke", "distill.confidence=batch"],
                                                            tmp_path), kd)  # one-process keys unchanged


# -- (slow) the same stages trained on 2 gloo processes and on 1 ----------------------------------------
# Two steps per stage: at the third, the KD stage amplifies rounding so much that two one-process runs
# that differ only in their intra-op thread count already differ by 1.4e-5 (measured on 2 cores).
STAGES = ["experiment=smoke", "stop_after=prune", "trainer.limit_train_batches=2"]


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _max_diff(a, b) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.slow  # a one-process and a ddp_sim smoke run to the prune stage, then a DDP prune (~3 min on 2 cores)
def test_ddp_stages_equal_the_one_process_stages(tmp_path):
    run_cli(STAGES, tmp_path / "one", timeout=600)
    run_cli([*STAGES, "trainer=ddp_sim"], tmp_path / "ddp", timeout=900)
    one, ddp = tmp_path / "one" / "run", tmp_path / "ddp" / "run"
    for stage in ("teacher", "kd_pretrain"):  # same key, same weights (float reduction order only)
        assert (one / stage).resolve().name == (ddp / stage).resolve().name
        assert _max_diff(_weights(one / stage / "net.pt"), _weights(ddp / stage / "net.pt")) <= 1e-5, stage
    # The prune stage on 2 processes from the very same KD weights: the identical mask. From the DDP-trained
    # weights (equal to ~3e-7) the scores nearest the threshold may swap sides: 86 of 67,848 measured on 2
    # cores, against 6,060 with Lightning's DistributedSampler order before the global batches.
    mixed = tmp_path / "mixed"
    (mixed / "stages").mkdir(parents=True)
    for stage in ("teacher", "kd_pretrain"):
        shutil.copytree((one / stage).resolve(), mixed / "stages" / (one / stage).resolve().name)
    proc = run_cli([*STAGES, "trainer=ddp_sim"], mixed, timeout=900)
    assert "stage kd_pretrain: reused" in proc.stderr + proc.stdout
    a, b = _weights(one / "prune" / "mask.pt"), _weights(mixed / "run" / "prune" / "mask.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    full = _weights(ddp / "prune" / "mask.pt")
    flipped = sum(int((a[k] != full[k]).sum()) for k in a)
    assert flipped <= 0.01 * sum(v.numel() for v in a.values()), flipped


def _digits_as_cifar(root) -> None:
    """A CIFAR-10 folder in torchvision's format whose images are the digits, upsampled to 32x32 RGB: real
    images (random pixels make the first steps at initialization so sensitive that rounding shows)."""
    import glob
    import os
    import pickle

    import numpy as np
    from sklearn.datasets import load_digits

    from tests.helpers.fake_data import write_fake_cifar

    write_fake_cifar(root, n_train=320, n_test=64)
    digits = load_digits()
    images = np.kron((digits.images / 16.0 * 255).astype(np.uint8), np.ones((1, 4, 4), dtype=np.uint8))
    rgb = np.stack([images] * 3, 1).reshape(len(images), -1)
    used = 0
    for path in sorted(glob.glob(os.path.join(str(root), "cifar-10-batches-py", "*_batch*"))):
        with open(path, "rb") as f:
            part = pickle.load(f, encoding="latin1")
        n = len(part["labels"])
        part["data"], part["labels"] = rgb[used:used + n], [int(v) for v in digits.target[used:used + n]]
        used += n
        with open(path, "wb") as f:
            pickle.dump(part, f, protocol=2)


@pytest.mark.slow  # the device data path on fake CIFAR images, teacher stage on 2 processes and on 1 (~2 min)
def test_ddp_ranks_on_the_device_path_train_on_the_one_process_batches(tmp_path):
    """What the two ranks of a ddp_sim fit receive, concatenated, is pixel for pixel what one process
    receives (crops and flips included), batch by batch; and the first step's weights agree."""
    _digits_as_cifar(tmp_path / "data")
    stage = ["experiment=smoke", "data=cifar10", f"data.root={tmp_path / 'data'}", "data.verify_checksums=false",
             "data.loader=device", "data.num_workers=0", "data.pin_memory=false", "data.limit_train=null",
             "data.val_size=64", "stop_after=teacher", "+callbacks.record._target_=tests.helpers.batch_recorder.BatchRecorder"]
    for run, extra in (("one", []), ("ddp", ["trainer=ddp_sim"])):
        run_cli([*stage, f"+callbacks.record.folder={tmp_path / run / 'batches'}", "trainer.limit_train_batches=3",
                 *extra], tmp_path / run, timeout=900)
    for step in range(3):
        one = torch.load(tmp_path / "one" / "batches" / f"rank0_epoch0_step{step}.pt")
        ranks = [torch.load(tmp_path / "ddp" / "batches" / f"rank{r}_epoch0_step{step}.pt") for r in (0, 1)]
        assert ranks[0]["y"].shape[0] == ranks[1]["y"].shape[0] == one["y"].shape[0] // 2
        for key in ("x", "y"):
            assert torch.equal(torch.cat([ranks[0][key], ranks[1][key]]), one[key]), (step, key)
    for run, extra in (("one1", []), ("ddp1", ["trainer=ddp_sim"])):
        run_cli([*stage, f"+callbacks.record.folder={tmp_path / run / 'batches'}", "trainer.limit_train_batches=1",
                 *extra], tmp_path / run, timeout=900)
    one, ddp = (tmp_path / d / "run" / "teacher" / "net.pt" for d in ("one1", "ddp1"))
    assert _max_diff(_weights(one), _weights(ddp)) <= 1e-5


def _ddp_steps_worker(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from tgp.training import AllReduceBatchNormSync

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        net = AllReduceBatchNormSync().apply(_float64_net())
        _sgd_steps(torch.nn.parallel.DistributedDataParallel(net), rank)
        if rank == 0:
            torch.save(AllReduceBatchNormSync().revert(net).state_dict(), out)
    finally:
        dist.destroy_process_group()


def _float64_net():
    from tgp.models.registry import build_model

    torch.manual_seed(0)
    return build_model("resnet20", num_classes=10, width=4).double()


def _sgd_steps(net, rank: int | None = None, steps: int = 3) -> None:
    """SGD with momentum on batches of 16 32×32 images whose upper half is a constant background (the
    case where float32 sums cancel); rank r of 2 takes its half of each batch."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(16, 3, 32, 32, generator=g, dtype=torch.float64), torch.randint(0, 10, (16,), generator=g)
        x[:, :, :16] = 0.0
        if rank is not None:
            x, y = x[rank * 8:(rank + 1) * 8], y[rank * 8:(rank + 1) * 8]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


@pytest.mark.slow  # two spawned interpreters import torch (~20 s on 2 cores)
def test_the_global_batchnorm_makes_ddp_steps_the_one_process_steps_in_float64(tmp_path):
    """In float64 (no rounding to hide behind) three SGD steps of a ResNet on 2 gloo ranks, each with half of
    every batch, end where one process ends: the forward and backward of the synchronized BatchNorm
    (tgp.sync_bn) are the full batch's."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_steps_worker, args=(f"file://{tmp_path}/store", str(tmp_path / "ddp.pt")), nprocs=2, join=True)
    one = _float64_net()
    _sgd_steps(one)
    ddp, ref = torch.load(tmp_path / "ddp.pt"), one.state_dict()
    assert _max_diff(ref, ddp) <= 1e-12
