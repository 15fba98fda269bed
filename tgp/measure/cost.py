"""The training cost of one job, as its ``metrics.json`` row records it (:func:`job_cost_fields`).

**The unit is FLOPs.** Every stage that trains records in its ``result.json`` (see
:class:`tgp.training.TrainingCost`) the examples that went through its training step
(``train_examples``, all ranks and epochs) and what they cost: ``train_flops_dense`` and
``train_flops`` (Conv2d/Linear work scaled by the mask's density at each epoch's start), per
example the forward and the measured backward of the trained network plus the forward of a frozen
network run alongside (a KD teacher, SDP's dense copy). Counted: the training steps. Not counted:
validation and test passes, pruning scores (at most ``pruning.score_batches`` batches) and
elementwise work (BatchNorm, losses, the optimizer). A stage without training (``init``,
``prune``, COLT's mask combination, a teacher loaded from a checkpoint) costs 0; a stage that
trained but recorded no FLOPs (a stage computed before this was recorded, e.g. an EPSD warm-up
from before its steps were counted)
is *unmeasured*: the totals it enters are ``None`` and the stage is listed in ``cost_unmeasured``.
Seconds are kept as a secondary number, labelled with the device they were measured on: they
vary with the machine and its load, FLOPs do not.

**One job** (``metrics.json``): ``cost_*_own`` sums the stages this job computed, ``cost_*_shared``
those it reused from the stage store (``stages_skipped``: computed by another job, or by an earlier
invocation of this one). ``stage_keys`` maps each stage to its key. A sweep's cost, each stage
counted once, is :mod:`tgp.report.cost`.
"""

from __future__ import annotations

SCOPE = ("training steps (forward + measured backward of the trained net, frozen networks' forward); "
         "not evaluation passes, pruning scores or elementwise work")


# -- one stage's result.json --------------------------------------------------------------------------
def _trained(result: dict) -> bool:
    return bool(result.get("epochs") or 0) or "train_flops" in result


def stage_flops(result: dict, field: str = "train_flops") -> int | None:
    """A stage's training FLOPs from its result: recorded value, 0 without training, None if unmeasured."""
    if field in result:
        return result[field]
    return None if _trained(result) else 0


def sum_or_none(values):
    """The sum, or None when any value is None (an unmeasured stage makes the total unknown)."""
    values = list(values)
    return None if any(v is None for v in values) else sum(values)


def device_label(devices) -> str | None:
    """The one device the numbers come from, ``"mixed: a, b"`` for several, None for none."""
    devices = sorted({d for d in devices if d})
    return None if not devices else devices[0] if len(devices) == 1 else "mixed: " + ", ".join(devices)


def job_cost_fields(results: dict[str, dict], keys: dict[str, str], skipped, num_train: int | None) -> dict:
    """The cost fields of one job's ``metrics.json`` row (see the module docstring).

    Per stage: ``train_flops_<stage>``, ``dense_train_flops_<stage>``, ``train_examples_<stage>``,
    ``device_<stage>``. Totals: ``cost_flops_{own,shared}``, ``cost_flops_dense_{own,shared}``,
    ``cost_seconds_{own,shared}``, ``cost_device`` (the devices the seconds come from),
    ``cost_unmeasured``, ``stage_keys``. Epochs in full-data-equivalent units (``train_examples /
    num_train``; COLT's half-data epochs count ~0.5, DLB's overlapping batches ~2):
    ``student_epochs_equiv`` (every training stage but the teacher's), ``teacher_epochs_equiv``,
    and ``teacher_epochs`` (nominal; 0 for a loaded teacher).
    """
    skipped = set(skipped)
    row: dict = {"stage_keys": dict(keys)}
    for stage, r in results.items():
        row[f"train_flops_{stage}"] = stage_flops(r)
        row[f"dense_train_flops_{stage}"] = stage_flops(r, "train_flops_dense")
        row[f"train_examples_{stage}"] = stage_flops(r, "train_examples")
        row[f"device_{stage}"] = r.get("device")
    for part, stages in (("own", [s for s in results if s not in skipped]), ("shared", [s for s in results if s in skipped])):
        row[f"cost_flops_{part}"] = sum_or_none(stage_flops(results[s]) for s in stages)
        row[f"cost_flops_dense_{part}"] = sum_or_none(stage_flops(results[s], "train_flops_dense") for s in stages)
        row[f"cost_seconds_{part}"] = sum(float(results[s].get("seconds") or 0.0) for s in stages)
    row["cost_device"] = device_label(r.get("device") for r in results.values())
    row["cost_unmeasured"] = [s for s, r in results.items() if stage_flops(r) is None]
    row["cost_scope"] = SCOPE

    def equiv(stages):
        examples = sum_or_none(stage_flops(results[s], "train_examples") for s in stages)
        return None if examples is None or not num_train else examples / num_train

    row["student_epochs_equiv"] = equiv([s for s in results if s != "teacher"])
    row["teacher_epochs_equiv"] = equiv(["teacher"]) if "teacher" in results else None
    row["teacher_epochs"] = results["teacher"].get("epochs") if "teacher" in results else None
    return row
