"""Network zoo: spec -> torch.nn.Module builders. No database, no I/O."""

from models.build import (
    MODELS,
    BuildContext,
    BuildError,
    Built,
    ModelSpec,
    build_model,
    count_parameters,
)
from models.layers import LAYERS

__all__ = [
    "LAYERS",
    "MODELS",
    "BuildContext",
    "BuildError",
    "Built",
    "ModelSpec",
    "build_model",
    "count_parameters",
]
