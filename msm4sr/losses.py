"""Pre-training losses on L2-normalised vectors (MSM4SR.md section 3).

`same` [B, B] marks in-batch pairs of different rows that share the next item (false negatives);
`same_target` says what happens to them: "mask" removes them from the denominators (default),
"logit0" replaces their logit by 0 (the released code).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def same_target_pairs(target: torch.Tensor) -> torch.Tensor:
    """[B] next items -> [B, B] bool, True where two different rows share the target."""
    same = target[:, None] == target[None, :]
    return same & ~torch.eye(len(target), dtype=torch.bool, device=target.device)


def _treat(logits: torch.Tensor, same: torch.Tensor, same_target: str) -> torch.Tensor:
    if same_target == "mask":
        return logits.masked_fill(same, float("-inf"))
    if same_target == "logit0":
        return logits.masked_fill(same, 0.0)
    raise ValueError(f"same_target must be 'mask' or 'logit0', not {same_target!r}")


def nip_loss(
    views: list[torch.Tensor], items: torch.Tensor, same: torch.Tensor, tau: float, same_target: str = "mask"
) -> torch.Tensor:
    """Next-item prediction, in-batch softmax against the batch's target item embeddings.

    views: one or more [B, D] normalised sequence representations (one view = the proj=False
    NIP; two views = the proj=True two-view NIP whose positives and negatives are pooled:
    -log((sum_v exp(s_v,ii)) / (sum_v sum_j exp(s_v,ij)))). items: [B, D] normalised targets.
    """
    logits = [_treat(v @ items.T / tau, same, same_target) for v in views]
    pos = torch.stack([lg.diagonal() for lg in logits], 1)  # [B, V]
    allv = torch.cat(logits, 1)  # [B, V*B]
    return (torch.logsumexp(allv, 1) - torch.logsumexp(pos, 1)).mean()


def cmcl_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    same: torch.Tensor,
    tau: float,
    same_target: str = "mask",
    form: str = "ntxent",
) -> torch.Tensor:
    """Cross-modality contrastive loss, averaged over both directions.

    form "ntxent" (default, the paper's description): anchor a_i has positive b_i and negatives
    b_j (j != i) and a_j (j != i); anchor b_i symmetrically (b_i . a_j and b_i . b_j).
    form "code" (the released code): the second direction reuses the rows of a @ b.T, so its
    cross-view terms are a_i . b_j instead of b_i . a_j.
    """
    if form not in ("ntxent", "code"):
        raise ValueError(f"cmcl form must be 'ntxent' or 'code', not {form!r}")
    eye = torch.eye(len(a), dtype=torch.bool, device=a.device)
    ab = _treat(a @ b.T / tau, same, same_target)
    aa = _treat(a @ a.T / tau, same, same_target).masked_fill(eye, float("-inf"))
    bb = _treat(b @ b.T / tau, same, same_target).masked_fill(eye, float("-inf"))
    pos = ab.diagonal()
    la = torch.logsumexp(torch.cat([ab, aa], 1), 1) - pos
    lb = torch.logsumexp(torch.cat([ab.T if form == "ntxent" else ab, bb], 1), 1) - pos
    return (la.mean() + lb.mean()) / 2


def normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)
