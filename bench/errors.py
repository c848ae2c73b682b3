"""One exception type for every user-facing error: the CLI prints its one-line message."""


class BenchError(Exception):
    """A problem with the user's input or environment, reported as one clear line."""


class StorageError(BenchError):
    """A file could not be written: disk full, read-only folder, quota (errno kept)."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno

    def __reduce__(self):
        return type(self), (str(self), self.errno)


class DamagedFile(BenchError):
    """A stored file failed its checksum or structural check (names the file)."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason

    def __reduce__(self):
        return type(self), (self.path, self.reason)


def warn(message: str) -> None:
    """One warning line on stderr, e.g. a damaged cache file that is discarded and rebuilt."""
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)
