"""Chunked full-softmax cross-entropy equals torch's dense F.cross_entropy (value and gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.nn.softmax_ce import next_item_ce, softmax_ce


@pytest.mark.parametrize("n,c,chunk", [(37, 1000, 128), (5, 300, 300), (64, 777, 100)])
def test_chunked_matches_dense_value_and_gradients(n, c, chunk):
    g = torch.Generator().manual_seed(n)
    h0 = torch.randn(n, 16, generator=g, dtype=torch.float64) * 3
    t0 = torch.randn(c, 16, generator=g, dtype=torch.float64)
    target = torch.randint(0, c, (n,), generator=g)
    target[:3] = target[0]  # repeated targets: their table-row gradients accumulate
    h1, t1 = h0.clone().requires_grad_(), t0.clone().requires_grad_()
    dense = F.cross_entropy(h1 @ t1.T, target)
    dense.backward()
    h2, t2 = h0.float().requires_grad_(), t0.float().requires_grad_()
    chunked = softmax_ce(h2, t2, target, max_logits=0, chunk=chunk)
    chunked.backward()
    assert chunked.item() == pytest.approx(dense.item(), rel=1e-5)
    torch.testing.assert_close(h2.grad.double(), h1.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(t2.grad.double(), t1.grad, rtol=1e-4, atol=1e-6)


def test_small_problems_take_the_dense_path_and_agree():
    h, t = torch.randn(4, 8, requires_grad=True), torch.randn(10, 8, requires_grad=True)
    y = torch.tensor([1, 2, 3, 9])
    assert softmax_ce(h, t, y).item() == pytest.approx(F.cross_entropy(h @ t.T, y).item(), rel=1e-6)
    assert softmax_ce(h, t, y).grad_fn.name() != "_ChunkedSoftmaxCEBackward"
    assert softmax_ce(h, t, y, max_logits=0).grad_fn.name() == "_ChunkedSoftmaxCEBackward"


def test_next_item_ce_takes_targeted_positions_and_never_the_padding_class():
    g = torch.Generator().manual_seed(0)
    out, items = torch.randn(3, 4, 8, generator=g), torch.randn(11, 8, generator=g)
    target = torch.tensor([[2, 5, 0, 0], [1, 0, 0, 0], [10, 3, 7, 4]])
    keep = target > 0
    expect = F.cross_entropy(out[keep] @ items[1:].T, target[keep] - 1)
    assert next_item_ce(out, target, items).item() == pytest.approx(expect.item(), rel=1e-6)


def test_next_item_ce_restricted_classes_is_ce_over_those_items_only():
    g = torch.Generator().manual_seed(0)
    n_items, h = 30, 8
    items = torch.randn(n_items + 1, h, generator=g)
    classes = torch.rand(n_items + 1, generator=g) > 0.4
    warm = torch.nonzero(classes[1:]).squeeze(1) + 1  # item ids that are classes
    out = torch.randn(3, 5, h, generator=g)
    target = warm[torch.randint(len(warm), (3, 5), generator=g)]
    target[:, :2] = 0  # positions without a target
    keep = target > 0
    logits = out[keep] @ items[warm].T
    expected = F.cross_entropy(logits, torch.searchsorted(warm, target[keep]))
    torch.testing.assert_close(next_item_ce(out, target, items, classes), expected)
    # padding is never a class, even when `classes` says so
    classes[0] = True
    torch.testing.assert_close(next_item_ce(out, target, items, classes), expected)


@pytest.mark.parametrize("restricted", [False, True])
def test_static_next_item_ce_equals_the_selected_one_in_value_and_gradient(restricted):
    """The accelerator's shape-static loss (every position scored, no-target positions weighed 0,
    non-class items at -inf) is the CPU loss to float rounding, gradients included; a padding
    position whose stand-in target is a non-class item must not turn the sum into nan."""
    from bench.nn.softmax_ce import static_next_item_ce

    g = torch.Generator().manual_seed(3)
    out = torch.randn(4, 6, 8, generator=g)
    items = torch.randn(31, 8, generator=g)
    target = torch.randint(2, 31, (4, 6), generator=g) * (torch.rand(4, 6, generator=g) > 0.4)
    classes = None
    if restricted:
        classes = torch.ones(31, dtype=torch.bool)
        classes[1] = False  # item 1: never a target, and every padding position's stand-in
        classes[torch.tensor([5, 9])] = False
        target[(target == 5) | (target == 9)] = 7
    grads = []
    for fn in (next_item_ce, static_next_item_ce):
        o, it = out.clone().requires_grad_(), items.clone().requires_grad_()
        loss = fn(o, target, it, classes)
        loss.backward()
        grads.append((loss.detach(), o.grad, it.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(grads[1][0])


def test_sasrec_loss_traces_as_one_graph():
    """Under torch.compile the loss takes the shape-static form: one graph, nothing that breaks a
    capture (the eager backend traces without compiling, so this stays fast on CPU)."""
    from baselines.sasrec import SASRec, SASRecConfig
    from bench.nn.model import ModelContext

    torch.manual_seed(0)
    import numpy as np

    model = SASRec(SASRecConfig(hidden=16, layers=1, heads=1), ModelContext(20, 6, np.ones(21))).eval()  # no dropout
    batch = {"input": torch.randint(0, 21, (3, 6)), "target": torch.randint(0, 21, (3, 6))}
    compiled = torch.compile(model.loss, backend="eager", fullgraph=True)  # fullgraph: a break raises
    torch.testing.assert_close(compiled(batch), model.loss(batch), rtol=1e-5, atol=1e-6)
