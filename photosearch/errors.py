"""One exception family. Each error carries an exit code and a one-line hint.

The library raises these and never prints or exits; the CLI turns them into
`Error: what happened. Hint: what to do.` on stderr and the matching exit code.
"""

from __future__ import annotations

# Exit codes (documented in the README).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3  # the run finished, but some photos could not be indexed
EXIT_BUSY = 4  # another process is writing to the library
EXIT_WEIGHTS = 5  # model weights could not be found or downloaded


class PhotosearchError(Exception):
    exit_code = EXIT_ERROR

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message.rstrip(".") + "."
        if self.hint:
            text += " Hint: " + self.hint.rstrip(".") + "."
        return text


class UsageError(PhotosearchError):
    exit_code = EXIT_USAGE


class LibraryError(PhotosearchError):
    """The library database is missing, unreadable or inconsistent."""


class NotFoundError(LibraryError):
    """A photo asked for by id or path is not in the library."""


class ModelMismatchError(PhotosearchError):
    """The library's vectors were made by a different model."""


class WeightsUnavailableError(PhotosearchError):
    exit_code = EXIT_WEIGHTS


class ModelLoadError(PhotosearchError):
    """The model spec is invalid or the weights don't fit the architecture."""


class StorageError(PhotosearchError):
    """The library can't be written (disk full, read-only); what was committed is intact."""


class BusyError(PhotosearchError):
    exit_code = EXIT_BUSY


class DecodeError(Exception):
    """A photo could not be turned into pixels. Recorded and skipped, never fatal."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
