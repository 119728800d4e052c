"""Early stopping on any ``phase.metric``, keeping the best weights in memory."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from trainrun.figures import derive
from trainrun.spec import EarlyStopping


class EarlyStopper:
    def __init__(self, rule: EarlyStopping) -> None:
        self.rule = rule
        self.best: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0
        self.best_weights: dict[str, Tensor] | None = None

    def update(self, epoch: int, figures: dict[str, dict[str, Any]], model: nn.Module) -> bool:
        """Fold in one epoch; returns True when patience has run out."""
        row = figures.get(self.rule.phase)
        if row is None:  # the monitored phase was not measured this epoch
            return False
        value = derive(row).get(self.rule.metric)
        if value is None or not math.isfinite(value):
            return False
        if self._improves(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            if self.rule.restore_best:
                self.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= self.rule.patience

    def _improves(self, value: float) -> bool:
        if self.best is None:
            return True
        delta = self.rule.min_delta
        return value > self.best + delta if self.rule.maximize else value < self.best - delta

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state(self, state: dict[str, Any], best_weights: dict[str, Tensor] | None) -> None:
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.bad_epochs = state["bad_epochs"]
        self.best_weights = best_weights
