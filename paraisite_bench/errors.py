"""Errors that are shown to the user as one clear line (never a traceback)."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: printed as one line, the run stops with exit code 2."""


class RecordError(ValueError):
    """One bad record (broken CIF, unknown element, bad kappa...): the record is skipped and reported.

    ``record_id`` names the record, ``source`` the file or dataset it came from.
    """

    def __init__(self, source: str, record_id: str, problem: str, hint: str = ""):
        self.source, self.record_id, self.problem, self.hint = source, record_id, problem, hint
        super().__init__(str(self))

    def __str__(self) -> str:
        line = f"{self.source}: record {self.record_id!r}: {self.problem}"
        return f"{line} — {self.hint}" if self.hint else line
