"""Errors a user can act on, each printed by the CLI as one line with exit code 2.

Anything that is not a TunesmithError is a bug in tunesmith and keeps its traceback (exit 1).
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_USAGE = 2
"""Exit code for bad input: data, config, model or output folder."""


def one_line(message: str) -> str:
    """Escape what would break the line or the terminal (newlines, control characters from a file's bytes)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


class TunesmithError(Exception):
    """Base of every error caused by the user's input rather than by a bug."""


class ConfigError(TunesmithError):
    """An option, config key or combination of options that cannot work."""


class ModelError(TunesmithError):
    """A pretrained model or run folder that cannot be loaded."""


class DiskError(TunesmithError):
    """The disk refused a write (full, read-only, no permission)."""


class NonFiniteError(TunesmithError):
    """The loss or a gradient became NaN or infinite."""


class Interrupted(TunesmithError):
    """SIGINT / SIGTERM stopped the run after a checkpoint was written; exits 128 + the signal number."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


@dataclass
class DataError(TunesmithError):
    """A problem with a data file, located as precisely as the format allows.

    ``row`` counts data records from 1 (the header is not a record); ``line`` is the physical
    line in a text file, which differs from the row when a field holds newlines.
    """

    file: str
    message: str
    row: int | None = None
    column: str | None = None
    line: int | None = None

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [self.file]
        if self.line is not None:
            where.append(f"line {self.line}" + (f" (row {self.row})" if self.row is not None else ""))
        elif self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return ", ".join(where) + ": " + self.message
