"""The training engine: a plain loop a Celery task, a CLI and a test can all call."""

from worker.engine.loop import EpochHook, Hooks, JobFailure, Stopped, TrainResult, train

__all__ = ["EpochHook", "Hooks", "JobFailure", "Stopped", "TrainResult", "train"]
