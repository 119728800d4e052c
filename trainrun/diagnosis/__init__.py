"""Diagnosis: findings about a run, read from its stored per-epoch figures and its spec.

Pure: no database and no tensors. ``diagnose`` takes the spec, the figure rows (anything with
``EpochFigures``' attribute names), the job's status and error, and optionally the class
frequencies of the split; it judges whatever epochs are there, so it works on a running job.

Each finding names *why*, with the epochs and figures it rests on (seeds 000-004). One module
per finding (``divergence``, ``degenerate``, ``not_learning``, ``penalty``, ``overfitting``,
``val_beats_train``), on top of ``series`` (the rows as points), ``layers`` (what the spec says
about the model), ``baselines`` (what a constant predictor scores) and ``thresholds``.
"""

from trainrun.diagnosis.baselines import constant_baseline
from trainrun.diagnosis.core import CHECKS, CODES, diagnose
from trainrun.diagnosis.layers import TrainModeLayer, final_activation, train_mode_layers
from trainrun.diagnosis.schema import ClassPriors, Diagnosis, FigureRow, Finding, Severity

__all__ = [
    "CHECKS",
    "CODES",
    "ClassPriors",
    "Diagnosis",
    "FigureRow",
    "Finding",
    "Severity",
    "TrainModeLayer",
    "constant_baseline",
    "diagnose",
    "final_activation",
    "train_mode_layers",
]
