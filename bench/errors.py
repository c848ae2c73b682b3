"""One exception type for every user-facing error: the CLI prints its one-line message."""


class BenchError(Exception):
    """A problem with the user's input or environment, reported as one clear line."""
