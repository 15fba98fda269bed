"""``compile=true`` and steps without per-batch host syncs.

* Settings: ``compile``/``compile_mode`` are validated (one-paragraph errors), kept out of stage keys
  and recorded in ``metrics.json`` and every fit's ``result.json``.
* A compiled masked retraining step equals the eager one (gradients on unmasked weights to float
  tolerance, exactly zero on masked ones, masked weights exactly zero after the optimizer step),
  through a real Lightning fit with the real :class:`~tgp.pruning.MaskEnforcer`; the compiled
  module's state_dict and checkpoint keys are the eager ones.
* The training, validation and test steps of every LightningModule (KD retraining with a teacher
  and a mask, the three EPSD self-distillation regimes, SDP with gradual pruning) read no value
  back from the device: Python-level reads (``item``, ``tolist``, ``bool``, ``float``, ``int``,
  ``cpu``, ``numpy``...) are counted while a batch runs, through real ``Training.fit`` runs with all
  of tgp's callbacks, the progress bar and a logger flushing every step. On a GPU the same runs
  go under ``torch.cuda.set_sync_debug_mode("error")``.
* Slow: a compiled smoke run end to end against an eager one; resume from ``last.ckpt`` with
  compile on, and across a compile=true → false switch.
"""

from __future__ import annotations

import copy
import math
import signal
import traceback
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import compose_cfg, read_json, run_cli
from tgp.errors import ConfigError
from tgp.lit import ClassifierModule, SelfDistilledPruningModule, SelfDistillModule
from tgp.lit.compiled import check_compile, compile_module, is_compiled
from tgp.pruning.enforcer import MaskEnforcer


# -- settings -------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, match", [
    (["compile=true", "compile_mode=reduce_overhead"], r"compile_mode='reduce_overhead'.*did you mean compile_mode=reduce-overhead"),
    (["compile_mode=fast"], r"compile_mode='fast': is not a mode of torch.compile.*max-autotune"),
])
def test_bad_compile_settings_are_one_paragraph_errors(overrides, match, tmp_path):
    cfg = compose_cfg(["experiment=smoke", *overrides], tmp_path)
    with pytest.raises(ConfigError, match=match) as e:
        check_compile(cfg)
    assert "\n" not in str(e.value) and "Fix:" in str(e.value)


def test_compile_is_true_or_false(tmp_path):
    from tgp.checks.values import check_values

    with pytest.raises(ConfigError, match=r"^compile='maybe': must be true or false; this is a text\. Fix: use e\.g\. "
                                          r"compile=true\.$"):
        check_values(compose_cfg(["experiment=smoke", "compile=maybe"], tmp_path))


def test_a_missing_cpu_compiler_is_refused_before_any_stage(tmp_path, monkeypatch):
    from torch._inductor import cpp_builder
    from torch._inductor.exc import InvalidCxxCompiler

    cfg = compose_cfg(["experiment=smoke", "compile=true"], tmp_path)
    check_compile(cfg)  # this machine has one (inductor needs it for CPU kernels)

    def no_compiler():  # what inductor raises when none of its candidates runs
        raise InvalidCxxCompiler

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    with pytest.raises(ConfigError, match=r"compile=True: torch.compile builds CPU kernels with a C\+\+ compiler, and "
                                          r"none works on this machine \(InvalidCxxCompiler.*Fix: install one.*"
                                          r"or run with compile=false"):
        check_compile(cfg)
    check_compile(compose_cfg(["experiment=smoke"], tmp_path))  # compile=false: nothing to build, no check


def test_a_compiler_failure_in_a_step_is_one_paragraph_naming_compile(monkeypatch):
    import torch._inductor.compile_fx as compile_fx

    def broken(*args, **kwargs):
        raise RuntimeError("cc1plus: fatal error: Python.h: No such file or directory\n(and 200 more lines)")

    monkeypatch.setattr(compile_fx, "compile_fx", broken)  # what the inductor backend calls to build kernels
    net = Tiny(classes=13)  # a graph no earlier test compiled (no cache hit)
    compile_module(net, "default", "the student probe")
    with pytest.raises(ConfigError) as e:
        net(torch.randn(3, 1, 5, 5))
    message = str(e.value)
    assert message.startswith("compile=True: torch.compile could not build the kernels of the student probe "
                              "(RuntimeError: cc1plus: fatal error: Python.h: No such file or directory).")
    assert "Fix: run with compile=false" in message and "\n" not in message
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no inductor traceback wall


def test_compile_is_in_every_stage_view_and_in_no_stage_key(tmp_path):
    from tgp.stages import KINDS, stage_key, stage_view
    from tgp.naming import config_hash

    eager = compose_cfg(["experiment=smoke"], tmp_path)
    compiled = compose_cfg(["experiment=smoke", "compile=true", "compile_mode=max-autotune"], tmp_path)
    assert config_hash(eager) == config_hash(compiled)
    for kind in KINDS.values():
        assert stage_key(eager, kind) == stage_key(compiled, kind), kind.name
        view = stage_view(compiled, kind)
        assert view.compile is True and view.compile_mode == "max-autotune"


# -- a compiled masked step equals the eager one ------------------------------------------------------
class Tiny(nn.Module):
    """conv → BN → ReLU → conv → pool → fc: small enough to compile in seconds, with every kind of
    layer the masks and the enforcer touch (conv and linear weights masked; BN and biases not)."""

    arch = "tiny"

    def __init__(self, classes: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.adaptive_avg_pool2d(F.relu(self.conv2(x)), 1).flatten(1)
        return self.fc(x)


class Capture(Callback):
    """Gradients as the optimizer sees them (after the MaskEnforcer, listed before this) and weights after the step."""

    def __init__(self):
        self.grads, self.weights = {}, {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads = {n: p.grad.detach().clone() for n, p in pl_module.net.named_parameters()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.weights = {n: p.detach().clone() for n, p in pl_module.net.named_parameters()}


def _mask(net: nn.Module, seed: int = 3) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=gen) > 0.6 for n, p in net.named_parameters()
            if n in ("conv1.weight", "conv2.weight", "fc.weight")}


def _one_step(compile_mode, net, mask, x, y, tmp_path):
    from tgp.distill.losses import DistillationLoss

    module = ClassifierModule(net, DistillationLoss(kd_weight=0.0), mask=mask, stage="retrain", lr=0.05, epochs=1,
                              optimizer={"name": "sgd", "momentum": 0.9, "weight_decay": 5e-3},
                              schedule={"kind": "constant", "warmup_epochs": 0}, compile_mode=compile_mode)
    capture = Capture()
    seen = {}

    class Probe(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen["compiled"] = is_compiled(pl_module.net)

    loader = DataLoader(TensorDataset(x, y), batch_size=len(x))
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[MaskEnforcer(), capture, Probe()],
                        default_root_dir=str(tmp_path))
    trainer.fit(module, train_dataloaders=loader)
    trainer.save_checkpoint(tmp_path / f"{compile_mode or 'eager'}.ckpt")
    assert seen["compiled"] == bool(compile_mode) and not is_compiled(module.net)  # compiled while fitting only
    return module, capture


def test_compiled_masked_step_equals_eager_and_masked_entries_stay_exactly_zero(tmp_path):
    torch.manual_seed(0)
    net = Tiny()
    mask = _mask(net)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 5, (16,))
    # The independent reference: plain autograd of CE on the eager network (train mode: batch statistics).
    ref = copy.deepcopy(net)
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if n in mask:
                p.mul_(mask[n])
    ref_grads = dict(zip([n for n, _ in ref.named_parameters()],
                         torch.autograd.grad(F.cross_entropy(ref(x), y), list(ref.parameters()))))

    eager, cap_e = _one_step(None, copy.deepcopy(net), mask, x, y, tmp_path)
    compiled, cap_c = _one_step("default", copy.deepcopy(net), mask, x, y, tmp_path)

    for n, g in ref_grads.items():
        m = mask.get(n, torch.ones_like(g, dtype=torch.bool))
        # Unmasked: the same gradient to float tolerance (compiled kernels fuse and reorder reductions).
        torch.testing.assert_close(cap_c.grads[n][m], g[m], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(cap_e.grads[n][m], g[m], rtol=1e-5, atol=1e-7)
        # Masked: exactly zero, in the gradient the optimizer sees and in the weights after the step
        # (momentum and weight decay would move them otherwise).
        assert torch.all(cap_c.grads[n][~m] == 0) and torch.all(cap_e.grads[n][~m] == 0), n
        assert torch.all(cap_c.weights[n][~m] == 0) and torch.all(cap_e.weights[n][~m] == 0), n
        torch.testing.assert_close(cap_c.weights[n], cap_e.weights[n], rtol=1e-4, atol=1e-6)
    # In-place compile: the same state_dict keys, the same checkpoint layout; one loads into the other.
    assert list(compiled.state_dict()) == list(eager.state_dict())
    a, b = (torch.load(tmp_path / f"{k}.ckpt", weights_only=False)["state_dict"] for k in ("default", "eager"))
    assert list(a) == list(b)
    fresh = Tiny()
    compile_module(fresh, "default")
    fresh.load_state_dict({k[len("net."):]: v for k, v in a.items() if k.startswith("net.")})
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in compiled.net.state_dict().items())


# -- no host syncs in the steps ------------------------------------------------------------------------
LOADER = "/torch/utils/data/"  # frames of the DataLoader: CPU work on the next batch, not the step
SYNC_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "__format__", "cpu", "numpy")


class SyncRecorder(Callback):
    """Records every Python-level read of a tensor's value while a batch runs.

    Windows: a training batch from ``on_train_batch_start`` until the next batch starts, the
    validation starts or the epoch ends — the step, backward, the MaskEnforcer's hooks, the
    optimizer and LR-scheduler steps, every callback's batch hooks (cost, LR monitor, progress bar)
    and Lightning's per-step logger flush; a validation/test batch from its ``on_*_batch_start``
    until Lightning has flushed its step metrics. Epoch-end work (metric ``compute``, checkpoints,
    the cost all-reduce) is outside: once per epoch is not per batch. Sanity-check batches count.
    Loading the next batch is not counted: the DataLoader (``torch/utils/data``) works on CPU tensors
    before the batch reaches the device (the digits augmentation draws its shifts with ``.item()``),
    in worker processes when ``data.num_workers > 0``; the GPU test below covers the device side.
    """

    def __init__(self):
        self.window: str | None = None
        self.reads: list[tuple[str, str, str]] = []
        self._busy = False

    def install(self, monkeypatch) -> None:
        for name in SYNC_READS:
            original = getattr(torch.Tensor, name)

            def read(t, *args, _original=original, _name=name, **kwargs):
                if self.window is not None and not self._busy:
                    self._busy = True
                    try:
                        frames = traceback.extract_stack()[:-1]
                        if not any(LOADER in f.filename for f in frames):
                            self.reads.append((self.window, _name, "".join(traceback.format_list(frames[-12:]))))
                    finally:
                        self._busy = False
                return _original(t, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, read)

    def _on(self, window):
        self.window = window

    def _off(self, *_, **__):
        self.window = None

    def setup(self, trainer, pl_module, stage):
        # An evaluation batch ends after Lightning's step-metric flush (then the epoch's own work may follow).
        connector = trainer._logger_connector
        flush = connector.update_eval_step_metrics

        def flush_then_close(*args, **kwargs):
            try:
                return flush(*args, **kwargs)
            finally:
                self._off()

        connector.update_eval_step_metrics = flush_then_close

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._on("train")

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._on("val")

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._on("test")

    on_validation_start = on_train_epoch_end = on_validation_epoch_end = on_test_epoch_end = _off
    on_exception = on_train_end = _off


def _sync_job(tmp_path, extra=()):
    from tgp.training import Training

    cfg = compose_cfg(["experiment=smoke", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
                       "trainer.log_every_n_steps=1", "trainer.num_sanity_val_steps=1", "data.limit_test=64",
                       "logger=csv", *extra], tmp_path)
    OmegaConf.update(cfg, "progress_bar", True)  # the bar updates every step: it must not read values either
    OmegaConf.update(cfg, "trainer.enable_progress_bar", True)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    return cfg, dm, Training(cfg, dm)


def _modules(kind: str, dm):
    """The real LightningModules of the stages, with what makes their steps do the most: a teacher with
    CA-KLD at dataset confidence and a mask (KD retraining); SD regimes; SDP with gradual pruning."""
    from tgp.blocks import kd_loss
    from tgp.data.views import SelfDistillData
    from tgp.models import build_model
    from tgp.pruning.callbacks import BestAtFinalSparsity, GradualMagnitudePruning
    from tgp.pruning.mask import prunable_parameters

    torch.manual_seed(0)
    net = build_model("resnet20", num_classes=dm.num_classes, in_channels=dm.in_channels, width=4)
    common = dict(stage="s", lr=0.05, epochs=2, num_classes=dm.num_classes)
    if kind == "kd_retrain":
        teacher = build_model("resnet20", num_classes=dm.num_classes, in_channels=dm.in_channels, width=4).eval()
        loss = kd_loss(OmegaConf.create({"kd_weight": 0.7, "temperature": 4.0, "kind": "ca_kld", "standardize": True,
                                         "confidence": "dataset", "confidence_logits": "plain"}), confidence=0.8)
        return ClassifierModule(net, loss, teacher=teacher, mask=_mask(net), **common), dm, []
    if kind in ("pskd", "dlb", "cskd"):
        module = SelfDistillModule(net, None, regime=kind, num_train=dm.num_train, mask=_mask(net), **common)
        return module, SelfDistillData(dm, kind), []
    start = {n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(net, []).items()}
    module = SelfDistilledPruningModule(net, None, dense=copy.deepcopy(net), cc_weight=0.1, off_diagonal_weight=0.005,
                                        mask=start, **common)
    return module, dm, [GradualMagnitudePruning(0.8, 2), BestAtFinalSparsity("s", 1, Path("/dev/null"))]


def _describe(reads) -> str:
    return "\n\n".join(f"[{w}] Tensor.{name} at\n{stack}" for w, name, stack in reads[:5])


@pytest.mark.parametrize("kind", ["kd_retrain", "pskd", "dlb", "cskd", "sdp"])
def test_training_validation_and_test_steps_read_nothing_back_from_the_device(kind, tmp_path, monkeypatch):
    cfg, base, training = _sync_job(tmp_path)
    module, dm, callbacks = _modules(kind, base)
    if kind == "sdp":
        callbacks[1].path = tmp_path / "best_final.pt"
    recorder = SyncRecorder()
    recorder.install(monkeypatch)
    result = training.fit("s", tmp_path / "fit", module, 2, callbacks=[*callbacks, recorder], datamodule=dm)
    trainer = training.trainer("s", tmp_path / "test", callbacks=[recorder])
    trainer.test(module, datamodule=base, verbose=False)
    monkeypatch.undo()
    windows = {w for w, _, _ in recorder.reads}
    assert not recorder.reads, f"{len(recorder.reads)} host reads in {sorted(windows)} steps:\n{_describe(recorder.reads)}"
    # The runs did happen, and the metrics still reach the logs (at the epoch's end).
    assert result["train_examples"] == 2 * 4 * 32 and 0.0 <= result["top1_last"] <= 1.0
    rows = (tmp_path / "fit" / "metrics.csv").read_text()
    assert "s/train/acc" in rows and "s/val/acc" in rows and "s/train/loss" in rows


def test_the_recorder_sees_a_sync_when_there_is_one(tmp_path, monkeypatch):
    """The check above can fail: a step that logs ``loss.item()`` is caught."""
    cfg, base, training = _sync_job(tmp_path)
    module, dm, _ = _modules("kd_retrain", base)
    original = module.training_step

    def step(batch, batch_idx):
        loss = original(batch, batch_idx)
        module.log("s/train/loss_float", loss.item(), on_step=False, on_epoch=True)
        return loss

    module.training_step = step
    recorder = SyncRecorder()
    recorder.install(monkeypatch)
    training.fit("s", tmp_path / "fit", module, 1, callbacks=[recorder], datamodule=dm)
    monkeypatch.undo()
    assert recorder.reads and {(w, n) for w, n, _ in recorder.reads} == {("train", "item")}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["kd_retrain", "pskd", "dlb", "cskd", "sdp"])
def test_steps_do_not_synchronize_the_gpu(kind, tmp_path):
    """On a GPU: every batch's work under ``torch.cuda.set_sync_debug_mode("error")`` (any synchronizing
    CUDA call raises), the windows of :class:`SyncRecorder`; epoch-end work runs in the default mode."""

    class SyncDebug(SyncRecorder):
        def _on(self, window):
            torch.cuda.set_sync_debug_mode("error")

        def _off(self, *_, **__):
            torch.cuda.set_sync_debug_mode("default")

        on_validation_start = on_train_epoch_end = on_validation_epoch_end = on_test_epoch_end = _off
        on_exception = on_train_end = _off

    cfg, base, training = _sync_job(tmp_path, ["trainer=gpu"])
    module, dm, callbacks = _modules(kind, base)
    if kind == "sdp":
        callbacks[1].path = tmp_path / "best_final.pt"
    debug = SyncDebug()
    try:
        training.fit("s", tmp_path / "fit", module, 2, callbacks=[*callbacks, debug], datamodule=dm)
        training.trainer("s", tmp_path / "test", callbacks=[debug]).test(module, datamodule=base, verbose=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# -- end to end (slow) ------------------------------------------------------------------------------------
# The whole digits training split, so that both runs converge (~90 % top-1) and their accuracies are
# comparable: with a few batches of lr 0.1 from scratch, the rounding differences of compiled kernels
# (1e-7 after a step) grow to O(1) weight differences between two near-chance runs, and their
# accuracies differ as two seeds' do.
E2E = ["experiment=smoke", "pruning.sparsity=0.8", "data.limit_train=null", "trainer.limit_train_batches=null",
       "teacher.epochs=2", "kd_pretrain.epochs=2", "retrain.epochs=1", "data.limit_test=null"]
N_TEST = 360  # the digits test split: 20 % of 1797 images


def _assert_exact_zeros(run: Path, sparsity: float) -> None:
    """Every masked entry of student_sparse.pt is exactly 0 and the mask removes exactly round(s·N)."""
    mask = torch.load(run / "prune" / "mask.pt")
    state = torch.load(run / "student_sparse.pt")
    n = sum(m.numel() for m in mask.values())
    assert sum(int((~m).sum()) for m in mask.values()) == round(sparsity * n)
    for name, m in mask.items():
        assert torch.all(state[name][~m] == 0), name


def _tolerance(p: float, n: int = N_TEST) -> float:
    """Three standard errors of the difference of two test accuracies on ``n`` examples: the noise between two
    independently trained runs. Runs that differ in float rounding only start identical and drift apart
    (SGD amplifies the differences), so this bounds their difference too."""
    return 3 * math.sqrt(2 * p * (1 - p) / n)


@pytest.mark.slow
def test_compiled_smoke_run_keeps_exact_zeros_and_matches_eager_accuracy(tmp_path):
    # Own folders and stage stores: compile is not in stage keys, a shared store would reuse the eager stages.
    run_cli(E2E, tmp_path / "eager")
    run_cli([*E2E, "compile=true"], tmp_path / "compiled")
    eager, comp = (read_json(tmp_path / k / "run" / "metrics.json") for k in ("eager", "compiled"))
    _assert_exact_zeros(tmp_path / "compiled" / "run", 0.8)
    assert comp["measured_sparsity"] == eager["measured_sparsity"]
    assert comp["compile"] == "default" and eager["compile"] is False
    for stage in ("teacher", "kd_pretrain", "retrain"):
        assert read_json(tmp_path / "compiled" / "run" / stage / "result.json")["compile"] == "default"
        assert read_json(tmp_path / "eager" / "run" / stage / "result.json")["compile"] is False
    assert eager["top1_teacher"] > 0.7 and eager["top1_last"] > 0.7  # converged: not two chance-level runs
    for key in ("top1_teacher", "top1_dense_student", "top1_last"):
        p = (eager[key] + comp[key]) / 2
        assert abs(comp[key] - eager[key]) <= _tolerance(p), (key, comp[key], eager[key])


# Smoke-sized: what is checked here is the resume, not the accuracy.
RESUME = ["experiment=smoke", "retrain.epochs=3", "trainer.deterministic=true"]


@pytest.mark.slow
def test_resume_from_last_ckpt_with_compile_on_and_across_a_switch_to_eager(tmp_path):
    from test_resume import run_interrupted

    compiled = [*RESUME, "compile=true"]
    for d in ("u", "a", "b"):
        (tmp_path / d).mkdir()
    run_cli(compiled, tmp_path / "u")
    # SIGTERM in the compiled retraining after its first epoch, then the same command again: the
    # uninterrupted compiled run's weights, bit for bit (inductor's CPU kernels are deterministic).
    rc, _ = run_interrupted(compiled, tmp_path / "a", "retrain", signal.SIGTERM)
    assert rc == 128 + signal.SIGTERM
    run_cli(compiled, tmp_path / "a")
    a = torch.load(tmp_path / "u" / "run" / "student_sparse.pt")
    b = torch.load(tmp_path / "a" / "run" / "student_sparse.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    attempts = read_json(tmp_path / "a" / "run" / "retrain" / "attempts.json")
    assert [x["status"] for x in attempts][-2:] == ["preempted", "done"]
    # A compiled run's last.ckpt resumed with compile=false: it loads (same keys), finishes, keeps exact zeros.
    rc, _ = run_interrupted(compiled, tmp_path / "b", "retrain", signal.SIGTERM)
    assert rc == 128 + signal.SIGTERM
    run_cli(RESUME, tmp_path / "b")
    _assert_exact_zeros(tmp_path / "b" / "run", 0.9)
    result = read_json(tmp_path / "b" / "run" / "retrain" / "result.json")
    assert result["compile"] is False and result["epochs"] == 3
    assert read_json(tmp_path / "b" / "run" / "metrics.json")["stages_skipped"] == ["teacher", "kd_pretrain", "prune"]
