"""The trainrun SDK: ``Client`` and ``AsyncClient`` over the HTTP API, with typed results.

from trainrun.client import Client

with Client("http://127.0.0.1:8000", token="trn_...") as client:
    job = client.submit("spec.yaml")
    for epoch in client.stream(job.id):
        print(epoch.epoch, epoch.figure("val", "loss"))
    model = client.load_model(client.wait(job.id).id)
"""

from trainrun.client._async import AsyncClient
from trainrun.client._errors import (
    ApiError,
    Conflict,
    ConnectionFailed,
    NotFound,
    RateLimited,
    ServerError,
    SpecFileError,
    TrainrunClientError,
    Unauthorized,
    ValidationFailed,
    WaitTimeout,
)
from trainrun.client._models import (
    FINAL_STATUSES,
    Curves,
    Diagnosis,
    EpochEvent,
    Evidence,
    Finding,
    Job,
    JobPage,
)
from trainrun.client._sweep_models import Sweep, SweepDiagnosis, SweepPage, SweepRun, SweepVariant
from trainrun.client._sync import Client

__all__ = [
    "FINAL_STATUSES",
    "ApiError",
    "AsyncClient",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Curves",
    "Diagnosis",
    "EpochEvent",
    "Evidence",
    "Finding",
    "Job",
    "JobPage",
    "NotFound",
    "RateLimited",
    "ServerError",
    "SpecFileError",
    "Sweep",
    "SweepDiagnosis",
    "SweepPage",
    "SweepRun",
    "SweepVariant",
    "TrainrunClientError",
    "Unauthorized",
    "ValidationFailed",
    "WaitTimeout",
]
