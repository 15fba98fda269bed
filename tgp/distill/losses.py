"""The weighted training objective shared by every stage: ``α·L_KD + (1 − α)·L_CE`` (for a regression
target such as STS-B's: ``α·MSE(z_S, z_T) + (1 − α)·MSE(z_S, y)``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tgp.distill.kd import ca_kld, kl_div, reverse_kl, teacher_confidence
from tgp.errors import ConfigError

KD_KINDS = ("ca_kld", "kl", "reverse_kl")
CONFIDENCE_MODES = ("dataset", "batch", "sample")
CONFIDENCE_LOGITS = ("plain", "standardized")


class DistillationLoss(nn.Module):
    """``L_total = α · L_KD(z_S, z_T) + (1 − α) · L_CE(z_S, y)``  (α = ``kd_weight``, paper).

    ``kind`` picks ``L_KD``: ``ca_kld`` (default, :func:`tgp.distill.ca_kld`), ``kl`` (Hinton)
    or ``reverse_kl``. For CA-KLD, ``confidence`` picks β: ``dataset`` (one number estimated
    over the training set before KD starts and set with :meth:`set_dataset_confidence`),
    ``batch`` or ``sample``, and ``confidence_logits`` what β is measured on: ``plain`` —
    ``max_c softmax(z_T)(c)`` on the teacher's plain logits at T = 1, as BitDistiller measures it
    (default) — or ``standardized`` — ``max_c softmax(ẑ_T / T)(c)``, the tempered standardized
    logits the divergence compares (at T > 1 every teacher then looks unconfident: β ≈ 1/C…0.2).
    With no teacher logits, or α = 0, the loss is plain CE.

    ``regression=True`` (a score target, one output: STS-B; ours, the paper has no regression task): the
    task loss is ``MSE(z_S, y)`` and the KD term ``MSE(z_S, z_T)``, the student regressing on the
    teacher's score, ``L = α · MSE(z_S, z_T) + (1 − α) · MSE(z_S, y)``; the divergence settings
    (``kind``, ``temperature``, ``standardize``, ``confidence``) do not apply there.

    Returns ``(total, parts)``; ``parts`` holds the unweighted terms for logging (``ce`` or ``mse``, ``kd``).
    """

    def __init__(
        self,
        kd_weight: float = 0.5,
        temperature: float = 4.0,
        kind: str = "ca_kld",
        standardize: bool = True,
        confidence: str = "dataset",
        label_smoothing: float = 0.0,
        confidence_logits: str = "plain",
        regression: bool = False,
    ):
        super().__init__()
        if not 0.0 <= kd_weight <= 1.0:
            raise ConfigError("distill.kd_weight", kd_weight, "α must lie in [0, 1].", "pick a value such as 0.5.")
        if temperature <= 0:
            raise ConfigError("distill.temperature", temperature, "the temperature must be positive.", "use e.g. 4.")
        if kind not in KD_KINDS:
            raise ConfigError("distill.kind", kind, "unknown divergence.", f"use one of {', '.join(KD_KINDS)}.")
        if confidence not in CONFIDENCE_MODES:
            raise ConfigError(
                "distill.confidence", confidence, "unknown confidence mode.", f"use one of {', '.join(CONFIDENCE_MODES)}."
            )
        if confidence_logits not in CONFIDENCE_LOGITS:
            raise ConfigError("distill.confidence_logits", confidence_logits, "unknown logits for the confidence β.",
                              f"use one of {', '.join(CONFIDENCE_LOGITS)}.")
        self.confidence_logits = confidence_logits
        self.regression = bool(regression)
        self.kd_weight, self.temperature, self.kind = float(kd_weight), float(temperature), kind
        self.standardize, self.confidence, self.label_smoothing = standardize, confidence, label_smoothing
        # Persisted so a resumed run reuses the confidence it started with.
        self.register_buffer("dataset_confidence", torch.tensor(float("nan")))

    @property
    def needs_dataset_confidence(self) -> bool:
        return self.kind == "ca_kld" and self.confidence == "dataset" and self.kd_weight > 0 and not self.regression

    @property
    def confidence_kwargs(self) -> dict:
        """How β is measured: ``teacher_confidence(z_T, **confidence_kwargs)``."""
        if self.confidence_logits == "plain":
            return {"temperature": 1.0, "standardize": False}
        return {"temperature": self.temperature, "standardize": self.standardize}

    def set_dataset_confidence(self, value: float) -> None:
        self.dataset_confidence.fill_(float(value))

    def kd_term(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        t, std = self.temperature, self.standardize
        if self.kind == "kl":
            return kl_div(student_logits, teacher_logits, temperature=t, standardize=std)
        if self.kind == "reverse_kl":
            return reverse_kl(student_logits, teacher_logits, temperature=t, standardize=std)
        if self.confidence == "dataset":
            # A tensor, not .item(): reading it back would sync the GPU every step.
            beta = self.dataset_confidence
        else:
            beta = teacher_confidence(teacher_logits.detach(), **self.confidence_kwargs)  # β_i
            if self.confidence == "batch":
                beta = beta.mean()
        return ca_kld(student_logits, teacher_logits, temperature=t, beta=beta, standardize=std)

    def forward(self, student_logits: Tensor, targets: Tensor, teacher_logits: Tensor | None = None):
        if self.regression:
            return self._regression(student_logits, targets, teacher_logits)
        ce = F.cross_entropy(student_logits, targets, label_smoothing=self.label_smoothing)
        if teacher_logits is None or self.kd_weight == 0:
            return ce, {"ce": ce.detach()}
        kd = self.kd_term(student_logits, teacher_logits)
        total = self.kd_weight * kd + (1 - self.kd_weight) * ce
        return total, {"ce": ce.detach(), "kd": kd.detach()}

    def _regression(self, outputs: Tensor, targets: Tensor, teacher_outputs: Tensor | None):
        mse = task_loss(outputs, targets, regression=True)
        if teacher_outputs is None or self.kd_weight == 0:
            return mse, {"mse": mse.detach()}
        kd = task_loss(outputs, teacher_outputs.detach(), regression=True)
        return self.kd_weight * kd + (1 - self.kd_weight) * mse, {"mse": mse.detach(), "kd": kd.detach()}


def task_loss(outputs: Tensor, targets: Tensor, regression: bool = False) -> Tensor:
    """The plain task loss: ``CE(z, y)`` for class indices; ``MSE = mean_i (z_i − y_i)²`` for a score
    target (one output per example, ``[B]`` or ``[B, 1]``). In float32 (bf16 outputs under autocast)."""
    if regression:
        return F.mse_loss(outputs.reshape(-1).float(), targets.reshape(-1).float())
    return F.cross_entropy(outputs.float(), targets)


@torch.inference_mode()
def estimate_dataset_confidence(teacher: nn.Module, batches, *, temperature: float, standardize: bool, device) -> float:
    """Mean teacher top-1 probability ``mean_x max_c softmax(ẑ_T(x)/T)_c`` over ``batches``."""
    total = torch.zeros((), device=device, dtype=torch.float64)
    count = 0
    for x, _ in batches:
        logits = teacher(x.to(device, non_blocking=True))
        total += teacher_confidence(logits, temperature=temperature, standardize=standardize).double().sum()
        count += x.shape[0]
    return float(total.item() / max(count, 1))
