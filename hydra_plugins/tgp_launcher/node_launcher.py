"""``hydra/launcher=node``: a multirun's jobs run concurrently on this machine, one per slot.

Built on submitit's local executor (the ``cluster`` extra, as ``hydra/launcher=submitit_local``):
every job is pickled and run by ``python -m submitit.core._submit`` in a fresh process, its output in
``<submitit_folder>/<id>_0_log.{out,err}``, its result pickled back. What this launcher adds:

* at most one job per slot (:mod:`.slots`), each started with the slot's ``CUDA_VISIBLE_DEVICES``
  (submitit's own local launcher starts every job at once, all on the same GPUs); a freed slot
  takes the next job; results come back in job order;
* one console line per job start and end (with its slot), and the jobs' own console lines relayed
  with a ``[#<job> slot <k>]`` prefix (``show_output``), so a job waiting on another's stage lock says
  so in the launcher's output as well as in its own ``run.log``;
* a job that fails (tgp records the failure and writes its ``error.txt``), raises or dies without a
  result (killed, ``sys.exit``) is a failed ``JobReturn``, logged ``#<job> failed``: the other jobs go
  on, and once all ended ``tgp-run`` lists the failed jobs and exits with the worst of their codes
  (:mod:`tgp.exits`);
* Ctrl-C or SIGTERM of the launcher stops every running job: SIGINT to the job's whole process group
  (controller, job, the job's own DDP workers; submitit's job process ignores SIGTERM on purpose),
  SIGKILL to what is left after ``stop_grace_s``; a launcher killed outright takes its jobs with it
  (Linux parent-death signal to each controller, which then stops its job).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from .slots import Slot, SlotError, plan_slots

log = logging.getLogger(__name__)


class NodeLauncher(Launcher):
    """Hydra launcher: the jobs of a multirun side by side on this machine (see the module docstring)."""

    def __init__(self, devices: Any = "auto", gpus_per_job: int = 1, jobs_per_gpu: int = 1, cpu_jobs: Any = "auto",
                 pin_cpus: bool = True, show_output: bool = True, timeout_min: float = 4320,
                 stop_grace_s: float = 10.0, poll_s: float = 0.2,
                 submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j") -> None:
        def plain(v):
            return OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v

        self.devices, self.gpus_per_job, self.jobs_per_gpu = plain(devices), gpus_per_job, jobs_per_gpu
        self.cpu_jobs, self.pin_cpus, self.show_output = cpu_jobs, bool(pin_cpus), bool(show_output)
        self.timeout_min, self.stop_grace_s, self.poll_s = float(timeout_min), float(stop_grace_s), float(poll_s)
        self.submitit_folder = str(submitit_folder)
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def slots(self) -> List[Slot]:
        return plan_slots(self.devices, self.gpus_per_job, self.jobs_per_gpu, self.cpu_jobs, self.pin_cpus)

    # -- in the job's process ---------------------------------------------------------------------
    def __call__(self, sweep_overrides: List[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: Dict[type, Singleton]) -> JobReturn:
        """Run one job (called by submitit in the job's fresh process)."""
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        Singleton.set_state(singleton_state)
        setup_globals()
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, sweep_overrides)
        with open_dict(sweep_config.hydra.job) as job:
            job.id = job_id
            job.num = job_num
        ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=sweep_config,
                      job_dir_key=job_dir_key, job_subdir_key="hydra.sweep.subdir")
        # tgp's task catches a job's error (writing its error.txt) so that a sweep goes on, and records
        # it: it goes back to the launcher as a failed result, never as a finished one.
        from tgp.exits import JobFailed, take_failures

        failures = take_failures()
        if failures and ret.status != JobStatus.FAILED:
            ret.status, ret.return_value = JobStatus.FAILED, JobFailed(failures[-1])
        return ret

    # -- in the launcher's process ----------------------------------------------------------------
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise RuntimeError("hydra/launcher=node needs submitit: install tgp's `cluster` extra "
                               "(pip install 'tgp[cluster]'), or drop hydra/launcher to run the jobs one after "
                               "another.") from None
        try:
            slots = self.slots()
        except SlotError as e:
            raise RuntimeError(f"hydra/launcher=node: {e}") from None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        executor = _SlotExecutor(self.submitit_folder, timeout_min=self.timeout_min)
        n = len(job_overrides)
        log.info("Node launcher: %d job%s, at most %d at a time (%s); job logs in %s", n, "" if n == 1 else "s",
                 len(slots), "; ".join(s.describe() for s in slots), _submitit_root(self.submitit_folder))

        pending = list(enumerate(job_overrides))
        free = list(slots)
        running: List[_Running] = []
        returns: List[Optional[JobReturn]] = [None] * n
        with _SignalsRaise() as signals:
            try:
                while pending or running:
                    while pending and free:
                        free.sort(key=lambda s: s.index)  # the lowest slot first: spread over the GPUs
                        slot = free.pop(0)
                        i, overrides = pending.pop(0)
                        idx = initial_job_idx + i
                        job = executor.submit_in(slot, self, list(overrides), "hydra.sweep.dir", idx,
                                                 f"job_id_for_{idx}", Singleton.get_state())
                        running.append(_Running(i, idx, list(overrides), slot, job, self.show_output))
                        log.info("#%d started in %s (pid %s): %s", idx, slot.describe(), job.job_id,
                                 " ".join(filter_overrides(overrides)))
                    time.sleep(self.poll_s)
                    for r in list(running):
                        r.relay()
                        if r.job.done():
                            r.relay(final=True)
                            returns[r.i] = r.result()
                            running.remove(r)
                            free.append(r.slot)
            except BaseException as e:
                _stop(running, self.stop_grace_s, "SIGTERM" if isinstance(e, _Terminated) else "Ctrl-C"
                      if isinstance(e, KeyboardInterrupt) else type(e).__name__)
                if isinstance(e, _Terminated):
                    signals.restore()
                    sys.exit(128 + signal.SIGTERM)
                raise
        return returns  # type: ignore[return-value]


def _submitit_root(folder: str) -> Path:
    path = Path(folder)
    return path.parent if "%j" in path.name else path


class _Running:
    """A started job: its slot, submitit job, and how far its log files have been relayed."""

    def __init__(self, i: int, idx: int, overrides: List[str], slot: Slot, job: Any, relay: bool):
        self.i, self.idx, self.overrides, self.slot, self.job = i, idx, overrides, slot, job
        self.started = time.perf_counter()
        self.relaying = relay
        self.offsets: Dict[str, int] = {}
        self.partial: Dict[str, str] = {}

    def relay(self, final: bool = False) -> None:
        """Print the new lines of the job's stdout/stderr, prefixed with the job and its slot (submitit's
        own INFO lines left out)."""
        if not self.relaying:
            return
        prefix = f"[#{self.idx} slot {self.slot.index}] "
        for path, stream in ((self.job.paths.stdout, sys.stdout), (self.job.paths.stderr, sys.stderr)):
            key = str(path)
            try:
                with open(path, "rb") as f:
                    f.seek(self.offsets.get(key, 0))
                    data = f.read()
                    self.offsets[key] = f.tell()
            except OSError:
                continue
            text = self.partial.pop(key, "") + data.decode("utf-8", "replace")
            lines = text.split("\n")
            if not final:
                self.partial[key] = lines.pop()  # an unfinished last line waits for its end
            for line in lines:
                line = line.rstrip("\r")
                if line and not _SUBMITIT_CHATTER.match(line):
                    stream.write(prefix + line.rsplit("\r", 1)[-1] + "\n")
            stream.flush()

    def result(self) -> JobReturn:
        """The job's JobReturn; a failed one (with the reason) when its process ended without a result."""
        seconds = time.perf_counter() - self.started
        took = f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
        reason = None
        if self.job.paths.result_pickle.exists():
            try:
                ret = self.job.results()[0]
            except Exception as e:  # noqa: BLE001 - submitit's error carries the job's traceback
                ret, reason = None, f"{type(e).__name__}: {e}"
        else:
            ret = None
            log_file = self.job.paths.stderr if _tail(self.job.paths.stderr) else self.job.paths.stdout
            reason = (f"its process ended without a result (killed, or it exited); the last lines of {log_file}:\n"
                      f"{_tail(log_file) or '(nothing)'}")
        from tgp.exits import CRASH, JobFailed, JobFailure, error_summary, record_failure

        job = f"#{self.idx} {' '.join(filter_overrides(self.overrides))}"
        if ret is None:
            log.error("#%d failed after %s (%s): %s", self.idx, took, self.slot.describe(), reason.splitlines()[0])
            code = self.job._process.poll()
            code = 128 - code if code is not None and code < 0 else (code or CRASH)  # -n: killed by signal n
            failure = JobFailure(job, code, str(self.job.paths.stderr), reason.splitlines()[0])
            ret = JobReturn(overrides=self.overrides, status=JobStatus.FAILED)
            ret.return_value = JobFailed(failure)
            record_failure(failure)  # for the sweep's exit code and last lines (tgp.run.main)
            return ret
        if ret.status == JobStatus.FAILED:
            failed = ret._return_value
            if isinstance(failed, JobFailed):  # tgp's job: its error is in its error.txt
                failure = failed.failure
                log.error("#%d failed after %s (%s): %s", self.idx, took, self.slot.describe(), failure.summary)
            else:
                failure = JobFailure(job, CRASH, str(self.job.paths.stderr), error_summary(f"{type(failed).__name__}: {failed}"))
                log.error("#%d failed after %s (%s): %r", self.idx, took, self.slot.describe(), failed)
            record_failure(failure)
        else:
            log.info("#%d finished in %s (%s)", self.idx, took, self.slot.describe())
        return ret


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# submitit's own progress lines, in its format or formatted by Hydra's job logging: not relayed
_SUBMITIT_CHATTER = re.compile(r"^(submitit (INFO|DEBUG) \(|\[[^\]]*\]\[submitit\]\[(INFO|DEBUG)\] - )")


def _stop(running: List[_Running], grace_s: float, why: str) -> None:
    """SIGINT to every running job's process group (controller, job, the job's own workers), SIGKILL
    to what is left after ``grace_s``."""
    if not running:
        return
    log.warning("Node launcher interrupted (%s): stopping %d running job%s (%s)", why, len(running),
                "" if len(running) == 1 else "s", ", ".join(f"#{r.idx}" for r in running))
    groups = [int(r.job.job_id) for r in running]
    for pgid in groups:
        _killpg(pgid, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(r.job._process.poll() is None for r in running):
        time.sleep(0.1)
    for pgid in groups:
        _killpg(pgid, signal.SIGKILL)
    for r in running:
        r.job._process.wait()  # its KeyboardInterrupt traceback stays in its log, off the console
    log.warning("Stopped. Re-run the same command to go on: finished jobs and stages are skipped.")


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class _Terminated(BaseException):
    """SIGTERM received by the launcher (raised from the signal handler, so the jobs can be stopped)."""


class _SignalsRaise:
    """While active (main thread only): SIGTERM raises :class:`_Terminated` (Ctrl-C already raises
    KeyboardInterrupt)."""

    def __enter__(self) -> "_SignalsRaise":
        import threading

        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame) -> None:
        raise _Terminated()

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None

    def __exit__(self, *exc) -> None:
        self.restore()


def _slot_executor_class():
    """submitit's LocalExecutor, starting each job's controller in the slot it is given."""
    from submitit.local.local import LocalExecutor, LocalJob

    class SlotExecutor(LocalExecutor):
        def __init__(self, folder: str, timeout_min: float):
            super().__init__(folder, max_num_timeout=0)
            self.update_parameters(timeout_min=timeout_min, tasks_per_node=1, signal_delay_s=120)
            self._slot: Optional[Slot] = None

        def submit_in(self, slot: Slot, fn, *args):
            self._slot = slot
            try:
                return self.submit(fn, *args)
            finally:
                self._slot = None

        def _submit_command(self, command: str):
            assert self._slot is not None, "submit through submit_in(slot, ...)"
            process = _start_controller(self.folder, command, self._slot, self.parameters)
            return LocalJob(folder=self.folder, job_id=str(process.pid), process=process, tasks=[0])

    return SlotExecutor


def _SlotExecutor(folder: str, timeout_min: float):  # noqa: N802 - a class built on first use (submitit is lazy)
    return _slot_executor_class()(folder, timeout_min)


def _start_controller(folder: Path, command: str, slot: Slot, params: Dict[str, Any]):
    """Start submitit's local job controller (``python -m submitit.local._local``, which runs ``command``
    as the job's one task) with the slot's environment, in a process group of its own (so it can be
    stopped with everything it started), pinned to the slot's cores, and told to stop when this
    process dies. The ``SUBMITIT_*`` variables are the controller's inputs (submitit 1.5)."""
    import subprocess

    env = dict(os.environ)
    env.update(slot.env())
    env.update(
        SUBMITIT_LOCAL_NTASKS="1",
        SUBMITIT_LOCAL_COMMAND=command,
        SUBMITIT_LOCAL_TIMEOUT_S=str(int(60 * float(params.get("timeout_min", 4320)))),
        SUBMITIT_LOCAL_SIGNAL_DELAY_S=str(int(params.get("signal_delay_s", 120))),
        SUBMITIT_LOCAL_NODEID="0",
        SUBMITIT_LOCAL_JOB_NUM_NODES="1",
        SUBMITIT_STDERR_TO_STDOUT="",
        SUBMITIT_EXECUTOR="local",
        SUBMITIT_LOCAL_WITH_SHELL="",
    )
    cpus, parent_death = slot.cpus, _parent_death_signal()

    def in_child() -> None:  # between fork and exec: keep it to system calls
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a launcher started with `&` ignores SIGINT: the job must not
        if cpus and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cpus)
        if parent_death is not None:
            parent_death()

    return subprocess.Popen([sys.executable, "-m", "submitit.local._local", str(folder)], env=env,
                            start_new_session=True, preexec_fn=in_child)


def _parent_death_signal():
    """On Linux, a function that asks the kernel to send SIGINT to the calling process (a controller:
    it then stops its job) when its parent dies (``prctl(PR_SET_PDEATHSIG)``); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, int(signal.SIGINT), 0, 0, 0)
