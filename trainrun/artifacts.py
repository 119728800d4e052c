"""Model files and checkpoints: safetensors with the spec as JSON metadata. Never pickle.

A model file holds the weights plus everything needed to rebuild the module (the job spec,
the input shape and the output width), so ``load_model(path)`` needs nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from models import BuildContext, build_model

METADATA_KEY = "trainrun"
FORMAT_VERSION = 1


def write_tensors(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Atomically write ``tensors`` with ``meta`` (JSON) as the file's metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(cpu, tmp, metadata={METADATA_KEY: json.dumps(meta)})
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_tensors(
    path: Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    with safe_open(str(path), framework="pt", device=str(device)) as fh:
        meta = json.loads((fh.metadata() or {}).get(METADATA_KEY, "{}"))
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
    return tensors, meta


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(
    path: Path,
    module: nn.Module,
    spec: dict[str, Any],
    input_shape: tuple[int, ...],
    output_width: int,
    epoch: int,
) -> None:
    meta = {
        "format": FORMAT_VERSION,
        "kind": "model",
        "spec": spec,
        "input_shape": list(input_shape),
        "output_width": output_width,
        "epoch": epoch,
    }
    write_tensors(path, dict(module.state_dict()), meta)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the trained module from a model file alone (eval mode)."""
    from trainrun.spec import JobSpec

    tensors, meta = read_tensors(Path(path), device)
    if meta.get("kind") != "model":
        raise ValueError(f"{path} is not a trainrun model file")
    spec = JobSpec.model_validate(meta["spec"])
    ctx = BuildContext(tuple(meta["input_shape"]), int(meta["output_width"]))
    with torch.device(device):
        module = build_model(spec.model, ctx).module
    module.load_state_dict(tensors)
    return module.eval()
