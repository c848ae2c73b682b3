"""SASRec with its original loss (Kang & McAuley 2018): binary cross-entropy on the positive next
item and one sampled negative at every position of the packed window.

Differences from the reference code: the negative is drawn uniformly over all items except the
target (the original excludes every item of the user's sequence, which the batch does not
carry); it is drawn from torch's global RNG, so the trainer's seed fixes it. No L2 term.
"""

from __future__ import annotations

import torch.nn.functional as F

from baselines.sasrec import SASRec, SASRecConfig
from baselines.seqops import sample_negatives
from bench.nn.model import MODELS


class SASRecBCEConfig(SASRecConfig):
    pass


@MODELS.register("sasrec_bce")
class SASRecBCE(SASRec):
    Config = SASRecBCEConfig
    label = "SASRec (BCE)"
    honours_train_classes = False  # negatives are sampled from every item
    sample_mode = "packed"  # every position of the window is trained

    def loss(self, batch):
        out = self.encode(batch["input"])
        keep = batch["target"] > 0
        h, pos = out[keep], batch["target"][keep]
        neg = sample_negatives(pos, self.n_items)
        pos_logit = (h * self.item_emb(pos)).sum(-1).float()
        neg_logit = (h * self.item_emb(neg)).sum(-1).float()
        # -log sigmoid(pos) - log sigmoid(-neg), averaged over trained positions
        return (F.softplus(-pos_logit) + F.softplus(neg_logit)).mean()
