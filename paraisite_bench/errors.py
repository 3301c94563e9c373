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


class PluginFailure(Exception):
    """A plugin's own bug (not bad data): e.g. a backbone's ``featurise`` raising something other than
    :class:`RecordError`. Never cached; the jobs that needed the plugin fail and the rest of the grid runs.

    ``plugin`` names the plugin, ``n`` how many records (or calls) failed (None: not counted in records, e.g.
    a baseline's fit), ``error`` the first error as one line, ``traceback`` its traceback (shown under
    ``PARAISITE_BENCH_DEBUG=1``)."""

    def __init__(self, plugin: str, n: int | None, error: str, traceback: str = ""):
        self.plugin, self.n, self.error, self.traceback = plugin, n, error, traceback
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.n is None:
            return f"plugin {self.plugin} failed: {self.error}"
        return f"plugin {self.plugin} failed on {self.n} record(s): {self.error}"
