"""Protocols: how a Dataset becomes training data and evaluation cases, and how it is judged."""

# importing registers the protocols
from protocols import cold_start, cross_domain, leave_one_out  # noqa: E402,F401
from protocols.base import MAIN_TEST, PROTOCOLS, EvalCases, Protocol, Split, StagePlan, TrainSequences

__all__ = ["MAIN_TEST", "PROTOCOLS", "EvalCases", "Protocol", "Split", "StagePlan", "TrainSequences"]
