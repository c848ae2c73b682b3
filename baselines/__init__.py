"""Reimplemented baselines; importing this package registers them."""

from baselines import pop, sasrec  # noqa: F401
