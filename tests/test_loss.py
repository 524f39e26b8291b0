"""Normalized focal loss against an independent per-pixel formula."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from icmformer.training.loss import NormalizedFocalLoss, normalized_focal_loss


def reference_nfl(logits: np.ndarray, labels: np.ndarray, alpha: float = 0.5, gamma: float = 2.0) -> float:
    """Plain-Python loops over the OFFICIAL.md formula (float64)."""
    per_sample = []
    for b in range(logits.shape[0]):
        lg, lb = logits[b, 0].astype(np.float64), labels[b, 0]
        pts, betas, valids, alphas = [], [], [], []
        for i in range(lg.shape[0]):
            for j in range(lg.shape[1]):
                p = 1.0 / (1.0 + math.exp(-lg[i, j]))
                valid = lb[i, j] != -1
                pt = 1.0 - abs(lb[i, j] - p) if valid else 1.0
                pts.append(pt)
                betas.append((1.0 - pt) ** gamma)
                valids.append(1.0 if valid else 0.0)
                alphas.append(alpha if lb[i, j] > 0.5 else 1.0 - alpha)
        mult = sum(valids) / (sum(betas) + 1e-12)
        total = 0.0
        for pt, beta, v, a in zip(pts, betas, valids, alphas):
            total += v * (-a * beta * mult * math.log(min(pt + 1e-12, 1.0)))
        per_sample.append(total / (sum(valids) + 1e-12))
    return float(np.mean(per_sample))


def random_batch(seed: int, b: int = 3, h: int = 9, w: int = 11):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(b, 1, h, w)).astype(np.float32)
    labels = rng.choice([1, 0, -1], size=(b, 1, h, w), p=[0.4, 0.45, 0.15]).astype(np.float32)
    return logits, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference(seed):
    logits, labels = random_batch(seed)
    ours = normalized_focal_loss(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    assert ours == pytest.approx(reference_nfl(logits, labels), rel=1e-5, abs=1e-7)


def test_other_alpha_gamma_and_module():
    logits, labels = random_batch(5)
    ours = NormalizedFocalLoss(alpha=0.25, gamma=3.0)(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    assert ours == pytest.approx(reference_nfl(logits, labels, 0.25, 3.0), rel=1e-5)


def test_ignore_pixels_do_not_matter():
    logits, labels = random_batch(3)
    labels[:, :, :2, :] = -1
    base = normalized_focal_loss(torch.from_numpy(logits), torch.from_numpy(labels))
    changed = logits.copy()
    changed[:, :, :2, :] = np.random.default_rng(9).normal(0, 10, size=changed[:, :, :2, :].shape)
    other = normalized_focal_loss(torch.from_numpy(changed), torch.from_numpy(labels))
    assert other.item() == pytest.approx(base.item(), rel=1e-6)


def test_gradient_flows_and_mult_is_detached():
    logits, labels = random_batch(4)
    x = torch.from_numpy(logits).requires_grad_(True)
    lab = torch.from_numpy(labels)
    loss = normalized_focal_loss(x, lab)
    loss.backward()
    g = x.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    assert (g[lab == -1] == 0).all()
    # Independent gradient with mult treated as a constant (detached) must equal autograd's.
    with torch.no_grad():
        p = torch.sigmoid(x)
        valid = (lab != -1).float()
        pt = torch.where(lab != -1, 1 - (lab - p).abs(), torch.ones_like(p))
        mult = valid.sum((-2, -1), keepdim=True) / (((1 - pt) ** 2).sum((-2, -1), keepdim=True) + 1e-12)
    x2 = x.detach().clone().requires_grad_(True)
    p2 = torch.sigmoid(x2)
    pt2 = torch.where(lab != -1, 1 - (lab - p2).abs(), torch.ones_like(p2))
    l2 = (-0.5 * (1 - pt2) ** 2 * mult * torch.log(torch.clamp(pt2 + 1e-12, max=1.0)) * valid).sum((1, 2, 3))
    (l2 / (valid.sum((1, 2, 3)) + 1e-12)).mean().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-8)


def test_all_ignore_sample_is_finite_and_zero():
    logits, labels = random_batch(6, b=2)
    labels[1] = -1
    x = torch.from_numpy(logits).requires_grad_(True)
    per = normalized_focal_loss(x, torch.from_numpy(labels), reduction="none")
    assert torch.isfinite(per).all()
    assert per[1].item() == 0.0
    per.mean().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[1] == 0).all()


def test_perfect_prediction_is_small_and_shape_errors():
    labels = torch.zeros(1, 1, 4, 4)
    labels[..., :2, :] = 1
    logits = (labels * 2 - 1) * 20
    assert normalized_focal_loss(logits, labels).item() < 1e-6
    with pytest.raises(ValueError, match="same shape"):
        normalized_focal_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
