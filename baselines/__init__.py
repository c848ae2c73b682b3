"""Reimplemented baselines; importing this package registers them."""

from baselines import (  # noqa: F401
    bert4rec,
    cl4srec,
    duorec,
    fdsa,
    gru4rec,
    pop,
    s3rec,
    sasrec,
    sasrec_bce,
    sasrecm,
    unisrec,
    vqrec,
)
