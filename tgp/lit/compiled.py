"""``compile=true``: the student's and the teacher's forward through ``torch.compile`` while a stage fits.

**What is compiled.** In every fit (``trainer.fit`` of a :class:`~tgp.lit.ClassifierModule` and its
subclasses) the forward of the student (``net``) and of a teacher the training step runs
(KD weight > 0; SDP's frozen dense copy) are compiled *in place* with :meth:`torch.nn.Module.compile`:
the module object, its parameters, buffers and ``state_dict`` keys stay what they are, so
checkpoints written with ``compile=true`` load with ``compile=false`` and vice versa, and a resume
may switch the setting. Compilation happens in the module's ``setup("fit")`` (in every process,
after ``ddp_spawn`` has pickled the module) and is undone in ``teardown("fit")``, so whatever runs
after the fit — the test evaluation, ``copy.deepcopy`` of the net, the next stage — sees eager modules.

**What stays eager, and why.** The prune stage's scoring pass (:mod:`tgp.pruning.scores`, a handful
of ``autograd.grad`` batches inside ``trainer.validate``), the dataset-confidence estimate, the
pruned network's validation in the prune stage and :meth:`tgp.training.Training.evaluate` each run
once over at most one split: compiling them costs tens of seconds and saves less than it costs.
Masks are never part of a graph: the :class:`~tgp.pruning.MaskEnforcer` masks ``.grad`` after the
compiled backward and the weights after the optimizer step (in place, outside the graph; the
compiled graph takes parameters as inputs, so it sees the masked values and does not recompile).

**Shapes.** ``dynamic=False``: every distinct input shape gets its own graph with shape-specialized
kernels (what CUDA graphs in ``reduce-overhead`` need anyway). A fit sees few shapes: the training
loaders drop their last partial batch, so training runs one shape per module; evaluation adds the
evaluation batch and the last partial validation batch. Every ``nn.Module`` shares one code object
(``Module._call_impl``), so the graphs of all modules and stages of a process count against one
recompile limit: it is raised to :data:`RECOMPILE_LIMIT` (never lowered), enough for teacher +
student × train/eval × these shapes, and a new network of an architecture already compiled in the
process (the next stage, the next IMP round) reuses its graphs (parameters are graph inputs).

**Stage identity.** ``compile`` and ``compile_mode`` are excluded from stage keys and run names
(:data:`tgp.naming.EXCLUDED_NODES`), like ``channels_last``: compiled kernels compute the same
functions and differ from eager kernels in float rounding only (fused ops, another reduction
order), as two GPU models or library versions do. Stages computed with and without compile are
therefore interchangeable in the stage store; each stage's ``result.json`` records whether its fit
was compiled (``compile``), and ``metrics.json`` the job's setting.
"""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from tgp.errors import ConfigError

log = logging.getLogger("tgp")

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
RECOMPILE_LIMIT = 64


def compile_setting(cfg: DictConfig) -> str | None:
    """The ``torch.compile`` mode a fit uses (``compile_mode``), or ``None`` with ``compile=false``.
    Reads ``compile`` and ``compile_mode`` (every stage view holds them, see :data:`tgp.stages.INFRA_NODES`)."""
    if not OmegaConf.select(cfg, "compile", default=False):
        return None
    return str(OmegaConf.select(cfg, "compile_mode", default="default") or "default")


def check_compile(cfg: DictConfig) -> None:
    """``compile_mode`` is a mode of ``torch.compile``, and with ``compile=true`` the toolchain inductor
    needs exists on this machine (a C++ compiler on CPUs, Triton on CUDA GPUs): a missing one is refused
    now, in one paragraph, instead of an inductor traceback in the first step. (That ``compile`` is true
    or false is checked with the root config's other settings, :mod:`tgp.checks.values`.)"""
    value = OmegaConf.select(cfg, "compile", default=False)
    mode = OmegaConf.select(cfg, "compile_mode", default="default")
    if mode not in COMPILE_MODES:
        import difflib

        close = difflib.get_close_matches(str(mode), COMPILE_MODES, n=1, cutoff=0.6)
        raise ConfigError("compile_mode", mode, "is not a mode of torch.compile.",
                          (f"did you mean compile_mode={close[0]}? " if close else "")
                          + f"use one of: {', '.join(COMPILE_MODES)}.")
    if value:
        check_toolchain(_uses_cuda(cfg))


def _uses_cuda(cfg: DictConfig) -> bool:
    accel = str(OmegaConf.select(cfg, "trainer.accelerator", default="cpu"))
    return accel in ("gpu", "cuda", "auto") and torch.cuda.is_available()


def check_toolchain(cuda: bool) -> None:
    """Raise a :class:`ConfigError` when inductor cannot build kernels here (no C++ compiler for CPU
    kernels, no Triton for CUDA kernels). Cheap: one ``<cxx> --version``, or an import check."""
    if cuda:
        from torch.utils._triton import has_triton

        if not has_triton():
            raise ConfigError("compile", True, "torch.compile builds CUDA kernels with Triton, and Triton is not "
                              "installed (or does not support this GPU) in this environment.",
                              "install the triton package that matches this torch build (pip install triton), "
                              "or run with compile=false.")
        return
    _quiet_cpu_toolchain()
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as e:  # noqa: BLE001 - InvalidCxxCompiler, or whatever a broken toolchain raises
        raise ConfigError("compile", True, "torch.compile builds CPU kernels with a C++ compiler, and none works on "
                          f"this machine ({type(e).__name__}; inductor looks for "
                          f"{_cxx_names()}).",
                          "install one (e.g. apt-get install g++, or set the CXX environment variable to a working "
                          "compiler), or run with compile=false.") from None


def _cxx_names() -> str:
    try:
        from torch._inductor import config

        names = config.cpp.cxx if isinstance(config.cpp.cxx, (list, tuple)) else (config.cpp.cxx,)
        return ", ".join(str(n) for n in names if n) or "g++"
    except Exception:  # noqa: BLE001
        return "g++"


# Errors that mean "the compiler failed", as opposed to an error the eager forward raises too.
def _compile_errors() -> tuple[type[BaseException], ...]:
    import torch._dynamo

    errors: list[type[BaseException]] = [torch._dynamo.exc.BackendCompilerFailed]
    try:
        from torch._inductor import exc as inductor_exc

        errors += [getattr(inductor_exc, n) for n in ("InductorError", "CppCompileError", "InvalidCxxCompiler")
                   if hasattr(inductor_exc, n)]
    except ImportError:
        pass
    return tuple(errors)


def _failure(e: BaseException, what: str) -> ConfigError:
    # BackendCompilerFailed says "backend='inductor' raised:" and holds the compiler's own error
    cause = e
    while getattr(cause, "inner_exception", None) is not None or (cause.__cause__ is not None and cause is e):
        cause = getattr(cause, "inner_exception", None) or cause.__cause__
    e = cause
    first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    log.debug("torch.compile of %s failed", what, exc_info=e)  # the whole traceback in run.log at DEBUG
    return ConfigError("compile", True, f"torch.compile could not build the kernels of {what} "
                       f"({type(e).__name__}: {first[:300]}).",
                       "run with compile=false (results are the same up to float rounding); to see the compiler's "
                       "full error, re-run with TORCHDYNAMO_VERBOSE=1.")


def guarded(fn, what: str):
    """``fn`` (a compiled callable) whose compiler failures become one :class:`ConfigError` paragraph."""
    errors = _compile_errors()

    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except errors as e:
            raise _failure(e, what) from None

    call.__wrapped__ = fn
    return call


def _raise_recompile_limit() -> None:
    import torch._dynamo

    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    if getattr(cfg, name) < RECOMPILE_LIMIT:
        setattr(cfg, name, RECOMPILE_LIMIT)


def compile_options(mode: str) -> dict:
    return {"mode": None if mode == "default" else mode, "dynamic": False}


def _quiet_cpu_toolchain() -> None:
    # Inductor imports torch.utils.cpp_extension, which warns "No CUDA runtime is found, using
    # CUDA_HOME=..." on machines without CUDA: about building CUDA extensions, nothing tgp does.
    if not torch.cuda.is_available():
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def compile_module(net: nn.Module, mode: str, what: str = "the network") -> None:
    """Compile ``net``'s ``__call__`` in place (:meth:`nn.Module.compile`; state_dict keys unchanged)."""
    _quiet_cpu_toolchain()
    _raise_recompile_limit()
    net.compile(**compile_options(mode))
    net._compiled_call_impl = guarded(net._compiled_call_impl, what)


def compile_method(fn, mode: str, what: str):
    """A compiled bound method (e.g. ``net.forward_features``), failures as a :class:`ConfigError`."""
    _quiet_cpu_toolchain()
    _raise_recompile_limit()
    return guarded(torch.compile(fn, **compile_options(mode)), what)


def uncompile_module(net: nn.Module | None) -> None:
    """Back to the eager forward (what :meth:`nn.Module.compile` set is dropped)."""
    if net is not None:
        net._compiled_call_impl = None


def eager_call(net: nn.Module, *args, **kwargs):
    """``net(*args)`` through its eager forward even while it is compiled (forward hooks included):
    for calls that happen once per fit, where compiling one more graph costs more than it saves."""
    return net._call_impl(*args, **kwargs) if is_compiled(net) else net(*args, **kwargs)


def is_compiled(net: nn.Module) -> bool:
    return getattr(net, "_compiled_call_impl", None) is not None
