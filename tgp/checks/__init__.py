"""Every setting checked before any work, each check once: a refusal is one paragraph (setting, value,
problem, fix; exit 2) and writes nothing.

Two moments. :func:`precheck` (``tgp-run`` calls it first) checks the command line on this machine
before Hydra starts; :func:`validate_job` checks the job in its own process, after its data and an
untrained student are built and before the job writes anything into its folder.

=====================  ==========================================================================
module                 what it checks
=====================  ==========================================================================
``precheck``           the order of the checks before Hydra starts (one compose per checked job)
``command_line``       Hydra's argument parser, the override grammar, a sweep's jobs, composing each
``composition``        why a job does not compose: YAML syntax, unknown options and keys, ``+key``
``suggest``            did-you-mean within the chosen option, and which options have a key
``values``             the root config's own settings have their types (``seed``, ``progress_bar``...)
``extras``             options that need an optional extra (Optuna sweeper, submitit) have it
``outputs``            the run or sweep folder, ``paths.log_dir`` and ``paths.stage_store`` are writable
``hardware``           the device, DDP launch modes, the node launcher's slots, SLURM
``job``                the job against the method, the data and the model (``validate_job``)
=====================  ==========================================================================
"""

from tgp.checks.job import validate_job
from tgp.checks.precheck import precheck


__all__ = ["precheck", "validate_job"]
