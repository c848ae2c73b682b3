"""What a content model's config asks of the feature store: the modalities it reads and the
store's parameters. Every content model uses this one mixin, so equal settings read the same
store entry and are validated the same way."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

Modality = Literal["text", "image"]
MODALITY_ORDER = ("text", "image")


class FeatureInputs(BaseModel):
    modalities: tuple[Modality, ...] = ("text", "image")  # a model may change the default
    n_keywords: int = Field(15, gt=0)  # image keywords per image; a feature-store parameter
    feature_params: dict[str, Any] = Field(default_factory=dict)  # other feature-store parameters

    @field_validator("modalities")
    @classmethod
    def _canonical_modalities(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("modalities must name at least one of 'text', 'image'")
        if len(set(v)) != len(v):
            raise ValueError(f"modalities repeated: {v}")
        return tuple(m for m in MODALITY_ORDER if m in v)

    @field_validator("feature_params")
    @classmethod
    def _no_duplicate_n(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "n_keywords" in v:
            raise ValueError("set n_keywords as its own field, not inside feature_params")
        return v

    def feature_store_params(self) -> dict[str, Any]:
        """Keyword arguments of bench.features.store.load_item_features."""
        if "image" not in self.modalities:  # text only: the same text vectors, no image tagging
            return {"image_kind": "none", "tagger": None, **self.feature_params}
        return {"n_keywords": self.n_keywords, **self.feature_params}
