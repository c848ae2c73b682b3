"""VQ-Rec item codes: an OPQ rotation and product-quantisation codebooks fitted with faiss on the
training items' vectors, then every item (validation/test-only ones included) assigned M codes.

The fit mirrors the reference index `faiss.index_factory(d, "OPQ{M},IVF1,PQ{M}x{nbits}")`
(RUCAIBox/VQ-Rec pq.py, "strict": trained on training items only):
  1. OPQ rotation (faiss.OPQMatrix) trained on the raw training vectors;
  2. IVF1: the one coarse centroid = the mean of the rotated training vectors;
  3. PQ codebooks (faiss.ProductQuantizer, L2 k-means per sub-space) trained on the residuals.
It is built from the parts instead of through index_factory because the factory's OPQ trains
its inner PQ with 8 bits whatever nbits says (so fewer than 256 training items fail even for
nbits < 8); here the OPQ's inner PQ has the configured nbits.

Codes are then the nearest centroid of each sub-vector of (rotated vector - centre), computed
here in float64 (what faiss's compute_codes does, without its bit packing). Everything is a
function of the training rows alone: features of items outside training never reach the fit.

faiss seeds its k-means with `cp.seed` and the OPQ's initial random rotation with a fixed seed;
its OpenMP reductions make results depend on the thread count, so the fit runs with torch's
thread count (one knob for the whole run, as bench.engine.determinism assumes) and restores faiss's.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from bench.errors import BenchError


def _faiss():
    """faiss, imported on first use: only VQ-Rec needs it, and importing it costs every CLI call."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs its CPU-feature probe at INFO
    try:
        import faiss
    except ImportError:
        raise BenchError("vqrec needs faiss: pip install 'msm4sr-bench[vqrec]' (or faiss-cpu)") from None

    return faiss


@dataclass(frozen=True)
class Quantizer:
    rotation: np.ndarray  # [d, d] float32: rotated = x @ rotation.T
    center: np.ndarray  # [d] float32, the IVF1 coarse centroid (subtracted after rotation)
    centroids: np.ndarray  # [M, K, d / M] float32 PQ codebooks

    @property
    def n_codes(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def n_centroids(self) -> int:
        return int(self.centroids.shape[1])


def check_settings(dim: int, n_train: int, n_codes: int, code_bits: int, opq: bool = True) -> None:
    """Clear errors for settings faiss would reject (or crash on)."""
    if n_codes < 1 or dim % n_codes:
        raise BenchError(f"vqrec: n_codes={n_codes} must divide the item vector size {dim} (d % M == 0)")
    if not 1 <= code_bits <= 16:
        raise BenchError(f"vqrec: code_bits={code_bits} must be in 1..16")
    if n_train < 2**code_bits:
        raise BenchError(
            f"vqrec: {n_train} training items cannot fit 2**code_bits = {2**code_bits} centroids per "
            f"sub-space; lower code_bits (n_codes={n_codes}) or train on more items"
        )
    if opq and n_train < dim:  # faiss's OPQ training aborts the process on rank-deficient data
        raise BenchError(
            f"vqrec: the OPQ rotation needs at least as many training items as vector dimensions "
            f"({n_train} < {dim}); set opq_iters=0 (plain PQ) or train on more items"
        )


def _pq(dim: int, n_codes: int, code_bits: int, seed: int):
    pq = _faiss().ProductQuantizer(dim, n_codes, code_bits)
    pq.verbose = False
    pq.cp.seed = seed
    pq.cp.min_points_per_centroid = 1  # only silences faiss's "please provide more points" warning
    return pq


def fit_quantizer(
    x_train: np.ndarray,
    n_codes: int,
    code_bits: int,
    opq_iters: int = 20,
    pq_iters: int = 25,
    seed: int = 1234,
    threads: int | None = None,
) -> Quantizer:
    """OPQ + IVF1 + PQ fitted on the rows of x_train [n, d] (the training items only)."""
    x = np.ascontiguousarray(x_train, dtype=np.float32)
    n, dim = x.shape
    check_settings(dim, n, n_codes, code_bits, opq=opq_iters > 0)
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads or torch.get_num_threads())
    try:
        if opq_iters > 0:
            opq = faiss.OPQMatrix(dim, n_codes)
            opq.verbose = False
            opq.niter = opq_iters
            inner = _pq(dim, n_codes, code_bits, seed)  # kept alive: opq holds a raw pointer to it
            opq.pq = inner
            opq.train(x)
            rotation = faiss.vector_to_array(opq.A).reshape(dim, dim).astype(np.float32)
        else:  # plain PQ (an ablation): no rotation
            rotation = np.eye(dim, dtype=np.float32)
        rotated = x @ rotation.T
        center = rotated.mean(0, dtype=np.float64).astype(np.float32)
        pq = _pq(dim, n_codes, code_bits, seed)
        pq.cp.niter = pq_iters
        pq.train(np.ascontiguousarray(rotated - center))
        centroids = faiss.vector_to_array(pq.centroids).reshape(n_codes, 2**code_bits, dim // n_codes)
    finally:
        faiss.omp_set_num_threads(before)
    return Quantizer(rotation, center, centroids.astype(np.float32))


def assign_codes(q: Quantizer, x: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """[n, d] vectors -> [n, M] int64 codes in 0..K-1 (nearest centroid per sub-space)."""
    m, k, sub = q.centroids.shape
    cents = q.centroids.astype(np.float64)
    c_sq = (cents**2).sum(-1)  # [M, K]
    out = np.empty((len(x), m), dtype=np.int64)
    for lo in range(0, len(x), chunk):
        r = (np.asarray(x[lo : lo + chunk], dtype=np.float64) @ q.rotation.T.astype(np.float64)) - q.center
        r = r.reshape(len(r), m, sub).transpose(1, 0, 2)  # [M, n, sub]
        dist = c_sq[:, None] - 2.0 * np.matmul(r, cents.transpose(0, 2, 1))  # [M, n, K], + |r|^2 per row
        out[lo : lo + chunk] = dist.argmin(-1).T
    return out


# Fits keyed by the training matrix and settings: one process builds a model per stage (and per
# tuning trial) from the same data, and a fit of 4k x 384 items takes seconds to tens of seconds.
_CACHE: OrderedDict[str, Quantizer] = OrderedDict()
_CACHE_SIZE = 4


def cached_fit(
    x_train: np.ndarray, n_codes: int, code_bits: int, opq_iters: int, pq_iters: int, seed: int
) -> Quantizer:
    x = np.ascontiguousarray(x_train, dtype=np.float32)
    h = hashlib.sha256(x.tobytes())
    h.update(repr((x.shape, n_codes, code_bits, opq_iters, pq_iters, seed, torch.get_num_threads())).encode())
    key = h.hexdigest()
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    q = fit_quantizer(x, n_codes, code_bits, opq_iters, pq_iters, seed)
    _CACHE[key] = q
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return q


def item_codes(
    vectors: torch.Tensor,
    train_counts: np.ndarray,
    n_codes: int,
    code_bits: int,
    opq_iters: int = 20,
    pq_iters: int = 25,
    seed: int = 1234,
) -> torch.Tensor:
    """[n_items + 1, d] item vectors (row 0 = padding) -> [n_items + 1, M] code-embedding ids.

    The quantiser is fitted on the items with train_counts > 0 only. Id layout: code c of
    sub-space k is 1 + k * K + c (K = 2**code_bits), so each sub-space has its own K embeddings;
    id 0 is the padding code, the padding item's whole row."""
    x = vectors.detach().float().cpu().numpy()
    counts = np.asarray(train_counts)
    if len(counts) != len(x):
        raise BenchError(f"vqrec: {len(counts) - 1} item counts for {len(x) - 1} item vectors")
    train = np.flatnonzero(counts[1:] > 0) + 1
    q = cached_fit(x[train], n_codes, code_bits, opq_iters, pq_iters, seed)
    codes = assign_codes(q, x[1:]) + 1 + np.arange(n_codes) * 2**code_bits
    return torch.cat([torch.zeros(1, n_codes, dtype=torch.long), torch.from_numpy(codes)])
