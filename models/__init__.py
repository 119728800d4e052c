"""Network zoo: spec -> torch.nn.Module builders. No database, no I/O."""

from typing import TYPE_CHECKING

from models import cnn1d as _cnn1d  # noqa: F401  (registers the preset)
from models.build import MODELS, BuildContext, BuildError, Built, build_model, count_parameters
from models.layers import LAYERS
from trainrun.catalog import KindSpec, tagged_union

# Built once every model kind has registered, so the spec schema lists them all.
if TYPE_CHECKING:
    ModelSpec = KindSpec
else:
    ModelSpec = tagged_union(MODELS, "kind")

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
