"""Reimplemented baselines; importing this package registers them."""

from baselines import bert4rec, cl4srec, duorec, gru4rec, pop, s3rec, sasrec, sasrec_bce  # noqa: F401
