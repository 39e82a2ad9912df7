"""CutMix (Yun et al. 2019) as IDC trains its networks: paste a box of a shuffled batch, mix the labels by area.

With probability ``p`` per batch::

    lam ~ Beta(beta, beta)
    box of side (int(W * sqrt(1 - lam)), int(H * sqrt(1 - lam))) centred uniformly at random,
        clipped to the image (so a box at the border is smaller)
    x[:, :, box] = x[perm, :, box]                   (perm a random permutation of the batch)
    ratio = 1 - area(box) / (H * W)                  (the share of each image that is still its own)
    loss  = ratio * CE(f(x), y) + (1 - ratio) * CE(f(x), y[perm])

Otherwise the loss is plain ``CE(f(x), y)``. All draws come from a CPU ``torch.Generator``,
so a seed reproduces the same boxes on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BETA = 1.0  # IDC's --beta default: lam uniform on [0, 1]


@dataclass(frozen=True)
class CutMixBox:
    """One draw: the permutation and the box ``rows [y0, y1) x cols [x0, x1)``."""

    perm: torch.Tensor
    y0: int
    y1: int
    x0: int
    x1: int

    def ratio(self, height: int, width: int) -> float:
        """The share of each image left untouched: ``1 - box area / image area``."""
        return 1.0 - (self.y1 - self.y0) * (self.x1 - self.x0) / (height * width)


def draw_box(n: int, height: int, width: int, generator: torch.Generator | None = None,
             beta: float = BETA) -> CutMixBox:
    """The permutation and clipped box of one CutMix draw (see the module docstring)."""
    lam = _beta(beta, generator)
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy = int(torch.randint(height, (1,), generator=generator))
    cx = int(torch.randint(width, (1,), generator=generator))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return CutMixBox(torch.randperm(n, generator=generator), y0, y1, x0, x1)


def _beta(beta: float, generator: torch.Generator | None) -> float:
    """Beta(beta, beta) drawn from ``generator``: Beta(1, 1) is the uniform distribution."""
    if beta == 1.0:
        return float(torch.rand((), generator=generator))
    # torch's Beta sampler takes no generator: seed a forked global RNG from it instead.
    seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return float(torch.distributions.Beta(beta, beta).sample())


def apply_box(x: torch.Tensor, box: CutMixBox) -> torch.Tensor:
    """``x`` with the box filled from ``x[perm]`` (a new tensor; ``x`` is untouched)."""
    out = x.clone()
    perm = box.perm.to(x.device)
    out[:, :, box.y0:box.y1, box.x0:box.x1] = x[perm][:, :, box.y0:box.y1, box.x0:box.x1]
    return out


def mix_batch(x: torch.Tensor, y: torch.Tensor, p: float, generator: torch.Generator | None = None,
              beta: float = BETA) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(x_mixed, y_b, ratio)`` of one batch, CutMix-ed with probability ``p`` (IDC's ``train_epoch``).

    Not mixed: ``(x, y, 1.0)``. One uniform draw decides, even when ``p`` is 0 or 1, so the
    generator's consumption does not depend on ``p``.
    """
    if float(torch.rand((), generator=generator)) >= p:
        return x, y, 1.0
    box = draw_box(len(x), x.shape[-2], x.shape[-1], generator, beta)
    return apply_box(x, box), y[box.perm.to(y.device)], box.ratio(x.shape[-2], x.shape[-1])


def mixed_cross_entropy(logits: torch.Tensor, y: torch.Tensor, y_b: torch.Tensor, ratio: float,
                        reduction: str = "mean") -> torch.Tensor:
    """``ratio * CE(logits, y) + (1 - ratio) * CE(logits, y_b)`` (plain CE when ``ratio`` is 1)."""
    loss = F.cross_entropy(logits, y, reduction=reduction)
    if ratio == 1.0:
        return loss
    return ratio * loss + (1.0 - ratio) * F.cross_entropy(logits, y_b, reduction=reduction)


def cutmix_loss(model, x: torch.Tensor, y: torch.Tensor, p: float, generator: torch.Generator | None = None,
                reduction: str = "mean", beta: float = BETA) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logits) of one training batch through ``model``, CutMix-ed with probability ``p``."""
    x, y_b, ratio = mix_batch(x, y, p, generator, beta)
    logits = model(x)
    return mixed_cross_entropy(logits, y, y_b, ratio, reduction), logits


__all__ = ["BETA", "CutMixBox", "apply_box", "cutmix_loss", "draw_box", "mix_batch", "mixed_cross_entropy"]
