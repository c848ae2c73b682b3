"""The one module that imports every plug-in once, so that each registers itself: the model packages
(baselines, msm4sr), the protocols and the built-in datasets.

Registries (bench.nn.model.MODELS, protocols.PROTOCOLS, bench.data.catalog.DATASETS) never import
their own plug-ins: a model module imports bench.nn.model, so bench.nn.model importing the models
back would tie every model into one import cycle. Code that looks a plug-in up by name imports the
lookup from here instead, which guarantees the registries are full.
"""

from __future__ import annotations

import baselines  # noqa: F401  (registers the baseline models)
import msm4sr  # noqa: F401  (registers "msm4sr")
from bench.data.catalog import DATASETS
from bench.nn.model import MODELS, SeqRecModel
from protocols import PROTOCOLS

__all__ = ["DATASETS", "MODELS", "PROTOCOLS", "get_model_class", "model_names"]


def get_model_class(name: str) -> type[SeqRecModel]:
    """The registered model class; BenchError listing the valid names otherwise."""
    return MODELS.get(name)


def model_names() -> list[str]:
    return MODELS.names()
