"""CA-KLD and the distillation objective against hand computations."""

import math

import pytest
import torch

from tgp.distill import DistillationLoss, ca_kld, kl_div, reverse_kl, standardize_logits, teacher_confidence
from tgp.errors import ConfigError

S = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
T = torch.tensor([[3.0, 1.0, -2.0], [-1.0, 0.0, 1.5]])


def hand_probs(z, temp, standardize=True):
    rows = []
    for row in z.tolist():
        if standardize:
            m = sum(row) / len(row)
            sd = math.sqrt(sum((v - m) ** 2 for v in row) / (len(row) - 1))  # unbiased, as torch.std
            row = [(v - m) / (sd + 1e-7) for v in row]
        e = [math.exp(v / temp) for v in row]
        rows.append([v / sum(e) for v in e])
    return rows


def hand_kl(p, q):
    return sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q))


@pytest.mark.parametrize("temp", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_ca_kld_equals_hand_computation(temp, beta):
    ps, pt = hand_probs(S, temp), hand_probs(T, temp)
    per = [beta * hand_kl(s, t) + (1 - beta) * hand_kl(t, s) for s, t in zip(ps, pt)]
    expected = temp**2 * sum(per) / len(per)
    assert ca_kld(S.double(), T.double(), temperature=temp, beta=beta).item() == pytest.approx(expected, rel=1e-9)


def test_batch_beta_is_mean_teacher_confidence():
    pt = hand_probs(T, 4.0)
    beta = sum(max(r) for r in pt) / len(pt)
    assert ca_kld(S, T, temperature=4.0).item() == pytest.approx(ca_kld(S, T, temperature=4.0, beta=beta).item(), rel=1e-6)


def test_per_sample_beta():
    temp = 2.0
    ps, pt = hand_probs(S, temp), hand_probs(T, temp)
    betas = [max(r) for r in pt]
    per = [b * hand_kl(s, t) + (1 - b) * hand_kl(t, s) for b, s, t in zip(betas, ps, pt)]
    got = ca_kld(S.double(), T.double(), temperature=temp, beta=teacher_confidence(T.double(), temperature=temp))
    assert got.item() == pytest.approx(temp**2 * sum(per) / 2, rel=1e-9)


@pytest.mark.parametrize("fn", [ca_kld, kl_div, reverse_kl])
def test_zero_for_identical_logits(fn):
    assert fn(T, T.clone(), temperature=4.0).item() == pytest.approx(0.0, abs=1e-6)


def test_t_squared_scaling_of_plain_kd():
    # Same distributions at T (logits pre-divided), the loss differs exactly by T².
    for temp in (2.0, 5.0):
        scaled = kl_div(S * temp, T * temp, temperature=temp)
        unit = kl_div(S, T, temperature=1.0)
        assert scaled.item() == pytest.approx(temp**2 * unit.item(), rel=1e-5)


def test_standardization_makes_loss_scale_invariant():
    assert ca_kld(3 * S + 1, T, temperature=2.0).item() == pytest.approx(ca_kld(S, T, temperature=2.0).item(), rel=1e-4)
    z = standardize_logits(S)
    assert torch.allclose(z.mean(-1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(z.std(-1), torch.ones(2), atol=1e-5)


def test_gradients_finite_for_extreme_logits():
    s = torch.tensor([[1e4, -1e4, 0.0], [5.0, 5.0, 5.0], [-3e4, 2e4, 1e-3]], requires_grad=True)
    t = torch.tensor([[-1e4, 1e4, 0.0], [1.0, 1.0, 1.0], [1e4, -1e4, 7.0]])
    for std in (True, False):
        for beta in (None, 0.5):
            loss = ca_kld(s, t, temperature=4.0, beta=beta, standardize=std)
            (g,) = torch.autograd.grad(loss, s)
            assert torch.isfinite(loss) and torch.isfinite(g).all()


def test_confidence_modes_of_the_objective():
    y = torch.tensor([0, 2])
    ce = torch.nn.functional.cross_entropy(S, y)
    batch = DistillationLoss(kd_weight=0.7, temperature=4.0, confidence="batch", confidence_logits="standardized")
    total, parts = batch(S, y, T)
    assert total.item() == pytest.approx(0.7 * ca_kld(S, T, temperature=4.0).item() + 0.3 * ce.item(), rel=1e-5)
    sample = DistillationLoss(kd_weight=1.0, temperature=4.0, confidence="sample", confidence_logits="standardized")
    beta_i = teacher_confidence(T, temperature=4.0)
    assert sample(S, y, T)[0].item() == pytest.approx(ca_kld(S, T, temperature=4.0, beta=beta_i).item(), rel=1e-6)
    dataset = DistillationLoss(kd_weight=1.0, temperature=4.0, confidence="dataset")
    dataset.set_dataset_confidence(0.25)
    assert dataset(S, y, T)[0].item() == pytest.approx(ca_kld(S, T, temperature=4.0, beta=0.25).item(), rel=1e-6)
    # The three modes are different numbers here, so each mode is really used.
    assert len({round(batch.kd_term(S, T).item(), 6), round(sample.kd_term(S, T).item(), 6),
                round(dataset.kd_term(S, T).item(), 6)}) == 3


def test_default_beta_is_the_plain_softmax_confidence_at_t1():
    """β (default ``confidence_logits=plain``) = mean_i max_c softmax(z_T,i)(c) at T = 1, by hand."""
    teacher = torch.tensor([[4.0, 0.0, 0.0], [0.0, 1.0, 3.0]], dtype=torch.float64)
    student = torch.tensor([[1.0, 0.5, -1.0], [0.2, 0.1, 0.4]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    row0 = math.exp(4) / (math.exp(4) + 2)  # softmax of (4, 0, 0), its max
    row1 = math.exp(3) / (1 + math.exp(1) + math.exp(3))
    hand = (row0 + row1) / 2
    loss = DistillationLoss(kd_weight=1.0, temperature=4.0, confidence="batch")
    assert loss.confidence_logits == "plain" and loss.confidence_kwargs == {"temperature": 1.0, "standardize": False}
    expected = ca_kld(student, teacher, temperature=4.0, beta=hand)
    assert loss(student, y, teacher)[0].item() == pytest.approx(expected.item(), rel=1e-12)
    per_sample = DistillationLoss(kd_weight=1.0, temperature=4.0, confidence="sample")
    expected_i = ca_kld(student, teacher, temperature=4.0, beta=torch.tensor([row0, row1], dtype=torch.float64))
    assert per_sample(student, y, teacher)[0].item() == pytest.approx(expected_i.item(), rel=1e-12)
    # The dataset estimate measures the same thing; the standardized reading at T = 4 calls a
    # teacher that is 98 % sure of its class hardly confident at all.
    from tgp.distill.losses import estimate_dataset_confidence

    batches = [(teacher, y)]
    plain = estimate_dataset_confidence(torch.nn.Identity(), batches, device="cpu", **loss.confidence_kwargs)
    assert plain == pytest.approx(hand, rel=1e-12) and plain > 0.9
    standardized = estimate_dataset_confidence(torch.nn.Identity(), batches, device="cpu", temperature=4.0,
                                               standardize=True)
    assert standardized < 0.5


def test_alpha_zero_or_no_teacher_is_plain_ce():
    y = torch.tensor([0, 2])
    ce = torch.nn.functional.cross_entropy(S, y)
    assert DistillationLoss(kd_weight=0.0)(S, y, T)[0].item() == pytest.approx(ce.item())
    assert DistillationLoss(kd_weight=0.9)(S, y, None)[0].item() == pytest.approx(ce.item())


@pytest.mark.parametrize("kwargs,setting", [({"kd_weight": 1.5}, "distill.kd_weight"), ({"kind": "mse"}, "distill.kind"),
                                            ({"confidence": "epoch"}, "distill.confidence"),
                                            ({"confidence_logits": "raw"}, "distill.confidence_logits"),
                                            ({"temperature": 0}, "distill.temperature")])
def test_bad_settings_name_the_setting(kwargs, setting):
    with pytest.raises(ConfigError, match=setting):
        DistillationLoss(**kwargs)
