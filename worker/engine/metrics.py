"""Per-phase sufficient statistics, accumulated on the device with one host sync per phase.

Stored figures are sums and counts; averages (loss, accuracy, MSE, R²...) are derived on read,
so a short last batch weighs exactly as many samples as it holds.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def tie_aware_hits(out: Tensor, y: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Per-sample credit and tie flag: a k-way tie for the top score holding the truth earns 1/k.

    That is the expected accuracy under a random tie-break, so a constant output scores
    chance (seed 002), never the 99% that counting ties as hits reports.
    """
    if out.shape[1] == 1:  # one output: a binary decision against the loss's threshold
        score = out[:, 0]
        tied = score == threshold
        hit = ((score > threshold) == (y == 1)).to(torch.float64)
        return torch.where(tied, 0.5, hit), tied
    top = out.max(dim=1, keepdim=True).values
    is_top = out == top  # (B, C)
    k = is_top.sum(dim=1).clamp(min=1)
    hit = is_top.gather(1, y.unsqueeze(1)).squeeze(1).to(torch.float64) / k
    return hit, k > 1


class PhaseStats:
    """Running sums for one phase; ``add`` never syncs with the host, ``figures`` syncs once."""

    def __init__(self, task: str, device: torch.device, threshold: float = 0.0) -> None:
        self.task = task
        self.threshold = threshold
        self.n = 0
        # Slots: loss_sum, penalty_sum, correct, ties, sse, sae, target_sum, target_sq_sum, count
        self._sums = torch.zeros(9, dtype=torch.float64, device=device)

    def add(self, out: Tensor, y: Tensor, loss: Tensor, penalty: Tensor | float = 0.0) -> None:
        """Fold in one batch: ``loss`` is the per-sample data term (B,)."""
        b = out.shape[0]
        self.n += b
        s = self._sums
        out = out.detach().to(torch.float64)
        s[0] += loss.detach().to(torch.float64).sum()
        s[1] += (
            penalty * b if isinstance(penalty, float) else penalty.detach().to(torch.float64) * b
        )
        if self.task == "classification":
            hit, tied = tie_aware_hits(out, y, self.threshold)
            s[2] += hit.sum()
            s[3] += tied.sum()
        else:
            target = y.to(torch.float64).reshape(out.shape)
            err = out - target
            s[4] += (err * err).sum()
            s[5] += err.abs().sum()
            s[6] += target.sum()
            s[7] += (target * target).sum()
            s[8] += target.numel()

    def figures(self, seconds: float) -> dict[str, Any]:
        """The stored row for this phase (one host sync)."""
        v = self._sums.tolist()
        row: dict[str, Any] = {
            "n": self.n,
            "loss_sum": v[0],
            "penalty": v[1] / self.n if self.n else 0.0,
            "seconds": seconds,
        }
        if self.task == "classification":
            row.update(correct=v[2], ties=round(v[3]))
        else:
            row.update(
                sse=v[4], sae=v[5], target_sum=v[6], target_sq_sum=v[7], target_count=round(v[8])
            )
        return row
