"""Sampled candidate sets (`--set protocol.candidates=uni100|pop100`): optional, never the default.

One candidate set per evaluation case: `n` negatives drawn WITHOUT replacement from the item ids
1..n_items minus the case's target (history items may be drawn: full ranking does not mask them
either unless evaluation.mask_history is set, and then they are masked in both figures alike).
    uni<n> : uniform over those items.
    pop<n> : proportional to training frequency (split.train.item_counts), without replacement
             (successive sampling: each next negative is drawn proportionally among the items not
             yet drawn). Items with zero training count are never drawn.
The sets are drawn once per (dataset content hash, split definition, part, spec, candidate seed),
stored as npz under the cache folder and loaded by every later model and seed, so every model of
a table is ranked against the same negatives. The target is ranked among itself + its n negatives
with the evaluator's tie policy (rank 1..n+1).
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.atomic import atomic_write
from bench.engine.metrics import rank_range, target_ranks
from bench.errors import BenchError, warn
from bench.hashing import hash_obj
from protocols.base import EvalCases

FORMAT_VERSION = 1
_SPEC = re.compile(r"^(uni|pop)(\d+)$")


@dataclass(frozen=True)
class CandidateSpec:
    sampler: str  # "uni" | "pop"
    n: int

    @property
    def name(self) -> str:
        return f"{self.sampler}{self.n}"


def parse_spec(text: str) -> CandidateSpec:
    m = _SPEC.match(text.strip())
    if not m or int(m.group(2)) < 1:
        raise BenchError(f"candidates {text!r}: expected uni<N> or pop<N> with N >= 1, e.g. uni100 or pop100")
    return CandidateSpec(m.group(1), int(m.group(2)))


def sampling_weights(spec: CandidateSpec, n_items: int, train_counts: np.ndarray | None) -> np.ndarray:
    """Weights of item ids 0..n_items (0 = padding, weight 0)."""
    if spec.sampler == "uni":
        w = np.ones(n_items + 1, dtype=np.float64)
    else:
        if train_counts is None:
            raise BenchError("pop candidates need the training item counts")
        w = np.asarray(train_counts, dtype=np.float64)[: n_items + 1].copy()
    w[0] = 0.0
    return w


def build_candidates(targets: np.ndarray, n_items: int, spec: CandidateSpec, seed: int | list[int],
                     train_counts: np.ndarray | None = None, chunk: int = 4096) -> np.ndarray:
    """[len(targets), spec.n] int64 negatives: distinct, never the row's target, never 0."""
    targets = np.asarray(targets, dtype=np.int64)
    w = sampling_weights(spec, n_items, train_counts)
    support = np.count_nonzero(w)
    if support - 1 < spec.n:  # the target may be one of the drawable items
        raise BenchError(f"candidates {spec.name}: only {support} items can be drawn, need {spec.n} besides the target")
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    rng = np.random.default_rng(seed)
    out = np.empty((len(targets), spec.n), dtype=np.int64)
    for lo in range(0, len(targets), chunk):
        hi = min(lo + chunk, len(targets))
        out[lo:hi] = _draw_rows(targets[lo:hi], cdf, spec.n, rng)
    return out


def _draw_rows(targets: np.ndarray, cdf: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw with replacement, reject the target and repeats, keep the first n distinct draws in draw
    order: exactly sampling without replacement (uniform or successive proportional sampling)."""
    rows = len(targets)
    out = np.zeros((rows, n), dtype=np.int64)
    todo = np.arange(rows)
    draws = np.zeros((rows, 0), dtype=np.int64)
    m = 2 * n + 16
    while len(todo):
        more = np.searchsorted(cdf, rng.random((len(todo), m)), side="right")
        draws = np.concatenate([draws, np.minimum(more, len(cdf) - 1)], axis=1)
        order = np.argsort(draws, axis=1, kind="stable")
        sorted_draws = np.take_along_axis(draws, order, axis=1)
        first = np.ones_like(sorted_draws, dtype=bool)
        first[:, 1:] = sorted_draws[:, 1:] != sorted_draws[:, :-1]
        keep_sorted = first & (sorted_draws != targets[todo, None]) & (sorted_draws != 0)
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=1)
        done = keep.sum(1) >= n
        if done.any():
            d = np.flatnonzero(done)
            k = keep[d]
            k &= np.cumsum(k, axis=1) <= n
            out[todo[d]] = draws[d][k].reshape(len(d), n)
        # rows still short of n distinct items continue the same draw sequence with more draws
        todo, draws = todo[~done], draws[~done]
        m = draws.shape[1]
    return out


def candidate_key(dataset_hash: str, split_definition: dict, part: str, spec: CandidateSpec, seed: int) -> str:
    return hash_obj({"dataset": dataset_hash, "split": split_definition, "part": part, "candidates": spec.name,
                     "seed": seed, "version": FORMAT_VERSION})


def _targets_digest(cases: EvalCases) -> str:
    return hash_obj([cases.users.tolist(), cases.targets.tolist()])


def load_or_build(folder: Path, cases: EvalCases, part: str, spec: CandidateSpec | str, *, dataset_hash: str,
                  split_definition: dict, n_items: int, train_counts: np.ndarray | None, seed: int = 0) -> np.ndarray:
    """The stored candidate sets of `part` ("valid" / "test" / an extra test name), drawn on first use.

    `seed` is the candidate seed (a protocol setting), never the model seed. Stored as
    folder/candidates-<key>.npz with the users and targets it was drawn for and a checksum; a
    stored file that fails its checks (damaged, edited, or drawn for other cases) is discarded
    with a warning and drawn again: the draw is deterministic, so every model still sees the same
    negatives.
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    key = candidate_key(dataset_hash, split_definition, part, spec, seed)
    path = Path(folder) / f"candidates-{key}.npz"
    digest = _targets_digest(cases)
    if path.exists() and (stored := _read_stored(path, digest, spec, cases, n_items)) is not None:
        return stored
    part_seed = int(hash_obj(part, 8), 16)  # distinct, stable stream per part
    cand = build_candidates(cases.targets, n_items, spec, [seed, part_seed], train_counts)
    buf = io.BytesIO()
    np.savez_compressed(buf, candidates=cand, cases_digest=np.array(digest), users=cases.users, targets=cases.targets,
                        spec=np.array(spec.name), sha256=np.array(_content_sha(cand, digest, spec)))
    try:
        atomic_write(path, lambda f: f.write(buf.getvalue()))
    except BenchError as exc:  # a cache: drawn again next time, identically
        warn(f"candidates not saved ({exc})")
    return cand


def _content_sha(cand: np.ndarray, digest: str, spec: CandidateSpec) -> str:
    h = hashlib.sha256(f"{FORMAT_VERSION}|{digest}|{spec.name}|{cand.shape}|{cand.dtype}|".encode())
    h.update(np.ascontiguousarray(cand).tobytes())
    return h.hexdigest()


def _read_stored(path: Path, digest: str, spec: CandidateSpec, cases: EvalCases, n_items: int) -> np.ndarray | None:
    """Stored candidates that pass every check, else None (warned and removed unless merely older)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "sha256" not in z.files:
                reason = None  # written before checksums: drawn again, silently
            else:
                cand, stored_digest, sha = z["candidates"], str(z["cases_digest"]), str(z["sha256"])
                if sha != _content_sha(cand, stored_digest, spec):
                    reason = "checksum mismatch (damaged or edited)"
                elif stored_digest != digest:
                    reason = "drawn for other evaluation cases"
                elif cand.dtype != np.int64 or cand.shape != (len(cases.targets), spec.n):
                    reason = f"unexpected array {cand.dtype} {cand.shape}"
                elif len(cand) and (cand.min() < 1 or cand.max() > n_items
                                    or (cand == np.asarray(cases.targets)[:, None]).any()):
                    reason = "item ids out of range or equal to the target"
                else:
                    return cand
    except Exception as exc:  # noqa: BLE001 - truncated / garbled zip or array: damaged
        reason = f"unreadable ({type(exc).__name__})"
    if reason:
        warn(f"stored candidates {path}: {reason}; discarded, drawn again")
    try:
        path.unlink()
    except OSError:
        pass
    return None


def sampled_ranks(scores: torch.Tensor, targets: torch.Tensor, candidates: torch.Tensor,
                  ties: str = "pessimistic", bounds: bool = False) -> torch.Tensor:
    """1-based rank (1..n+1) of each row's target among itself and its n candidates, from full
    score rows [rows, n_items + 1] (after any masking the evaluator applies). With `bounds`,
    [2, rows]: the rank range under `ties` (as `rank_range`), which the evaluator stores."""
    sub = torch.cat([scores.gather(1, targets.view(-1, 1)), scores.gather(1, candidates)], dim=1)
    first = torch.zeros(len(sub), dtype=torch.long, device=sub.device)
    return rank_range(sub, first, ties) if bounds else target_ranks(sub, first, ties)


def for_split(split, part: str, cases: EvalCases, dataset_hash: str, folder: Path) -> np.ndarray | None:
    """The candidate sets of one part of `split` when its definition asks for sampled candidates
    (`candidates`: uni<N>|pop<N>, `candidates_seed`), else None. The runner's one call per part."""
    spec = split.definition.get("candidates")
    if not spec:
        return None
    return load_or_build(folder, cases, part, spec, dataset_hash=dataset_hash, split_definition=split.definition,
                         n_items=split.n_items, train_counts=split.train.item_counts(split.n_items),
                         seed=int(split.definition.get("candidates_seed", 0)))
