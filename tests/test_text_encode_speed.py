"""Token-batched text encoding: vectors as the unbatched reference, progress counted in tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.features import text_encoder
from bench.features.progress import Progress
from bench.features.text_encoder import DEFAULT_ENCODER, TextEncoder

TEXTS = [
    "tape",
    "Nitrile exam gloves, powder free, large, box of 100",
    "Digital multimeter for measuring voltage and current " * 6,
    "beaker",
    "Stainless steel lab tongs with vinyl-coated tips for hot glassware",
    "tape",
    "a",
    "3M Scotch-Weld epoxy adhesive DP420, off-white, 50 ml cartridge, two-part structural",
]


@pytest.fixture(scope="module")
def encoder(two_threads):
    return TextEncoder(DEFAULT_ENCODER, batch_size=3)


def test_token_batched_vectors_equal_one_string_at_a_time(encoder):
    """Each string alone (no padding at all) is the reference: batching by tokens stays within 1e-5."""
    out = encoder.encode(TEXTS, progress=False)
    tok, model = encoder._tokenizer, encoder._model
    with torch.inference_mode():
        for text, vector in zip(TEXTS, out):
            t = tok([text], truncation=True, max_length=encoder.max_length, return_tensors="pt")
            ref = torch.nn.functional.normalize(model(**t).last_hidden_state.mean(1), dim=-1)[0].numpy()
            np.testing.assert_allclose(vector, ref, atol=1e-5)


def test_progress_counts_padded_tokens_and_items(encoder, monkeypatch):
    seen = {}

    class Spy(Progress):
        def __init__(self, total, *args, **kwargs):
            super().__init__(total, *args, **kwargs)
            seen["total"], seen["items"] = total, kwargs["items"]

        def close(self):
            seen["done"], seen["items_done"] = self.done, self.items_done

    monkeypatch.setattr(text_encoder, "Progress", Spy)
    encoder.encode(TEXTS, progress=False)
    lengths = sorted(len(ids) for ids in encoder._tokenizer(sorted(set(TEXTS)))["input_ids"])
    padded = sum(len(lengths[i : i + 3]) * max(lengths[i : i + 3]) for i in range(0, len(lengths), 3))
    assert seen == {"total": padded, "items": len(set(TEXTS)), "done": padded, "items_done": len(set(TEXTS))}
    # sorted by tokens, batches of 3 carry almost no padding
    assert padded < 1.25 * sum(lengths)


def test_eta_comes_from_work_done_not_items():
    bar = Progress(1000, "x", enabled=False, unit="tokens", items=4)
    assert bar.eta_seconds() is None
    bar.start -= 10.0  # 10 s have passed
    bar.advance(250, items=3)  # three short strings: a quarter of the tokens
    assert bar.eta_seconds() == pytest.approx(30.0, rel=0.05)  # not the ~3 s that 3/4 items would say


def test_batches_respect_both_caps():
    enc = TextEncoder(DEFAULT_ENCODER, batch_size=4, max_tokens=20)
    lengths = [3, 9, 2, 5, 5, 30, 4, 6, 2]
    batches = enc.batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths)  # shortest first, so each batch's last string is its longest
    for b in batches:
        assert len(b) <= 4
        assert len(b) * lengths[b[-1]] <= 20 or len(b) == 1  # a string over the budget goes alone
    assert [lengths[i] for i in batches[-1]] == [30]
    # the token cap, not the row cap, binds for long strings: fewer rows per batch
    assert batches == [[2, 8, 0, 6], [3, 4, 7], [1], [5]]


def test_bfloat16_is_opt_in_close_and_keyed_apart(encoder):
    fp32 = encoder.encode(TEXTS, progress=False)
    bf16 = TextEncoder(DEFAULT_ENCODER, precision="bfloat16")
    bf16._model, bf16._tokenizer = encoder._model, encoder._tokenizer
    low = bf16.encode(TEXTS, progress=False)
    assert low.dtype == np.float32
    diff = np.abs(low - fp32).max()
    assert 1e-5 < diff < 1e-2  # it does change the vectors (hence opt-in) but keeps them close
    assert (low * fp32).sum(1).min() > 0.999  # cosine to the float32 vector
    assert encoder.fingerprint() == text_encoder.encoder_fingerprint(encoder.model_dir)  # float32: as before
    assert bf16.fingerprint() != encoder.fingerprint()


def test_bad_encoder_options_fail_in_one_line():
    with pytest.raises(BenchError, match="precision 'int8'"):
        TextEncoder(DEFAULT_ENCODER, precision="int8")
    with pytest.raises(BenchError, match="max_tokens must be >= 1"):
        TextEncoder(DEFAULT_ENCODER, max_tokens=0)


def test_worker_pool_gives_the_in_process_vectors_and_counts_all_work(encoder, monkeypatch):
    """Two worker processes (forced on for a small input) return the vectors of one process, in
    the caller's order (to rounding: this process runs two threads, the workers one each), and
    the progress still ends at every token and item."""
    done = {}

    class Spy(Progress):
        def close(self):
            done["tokens"], done["items"], done["total"] = self.done, self.items_done, self.total

    texts = TEXTS * 3 + [f"sample item number {i} with a longer description" * (i % 4 + 1) for i in range(40)]
    alone = TextEncoder(DEFAULT_ENCODER, batch_size=3, workers=1).encode(texts, progress=False)
    monkeypatch.setattr(text_encoder, "MIN_PARALLEL_TOKENS", 0)
    monkeypatch.setattr(text_encoder, "Progress", Spy)
    pooled = TextEncoder(DEFAULT_ENCODER, batch_size=3, workers=2)
    assert pooled._pool_size(10) == 2
    np.testing.assert_allclose(pooled.encode(texts, progress=False), alone, atol=1e-6, rtol=0)
    assert done["tokens"] == done["total"] > 0 and done["items"] == len(set(texts))
    assert text_encoder._WORKER is None  # the pool's reference to the model is released


def test_small_encodes_and_one_thread_stay_in_process(monkeypatch):
    enc = TextEncoder(DEFAULT_ENCODER, workers=4)
    assert enc._pool_size(text_encoder.MIN_PARALLEL_TOKENS - 1) == 1  # start-up would cost more
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert TextEncoder(DEFAULT_ENCODER)._pool_size(10**9) == 1  # OMP_NUM_THREADS=1 keeps one core
    with pytest.raises(BenchError, match="workers"):
        TextEncoder(DEFAULT_ENCODER, workers=0)
