"""Celery worker: the app, the task that runs one job, and the training engine."""
