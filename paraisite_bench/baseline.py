"""The baseline contract: a model with no training stage, fitted on a split's training records and asked
for the test records' values (scikit-learn style, seconds), so that every number of Table I can be read
against what a trivial predictor scores on the same split. Registered with ``register_baselines`` (see
:mod:`paraisite_bench.hookspecs`); run by :mod:`paraisite_bench.baselines`."""

from __future__ import annotations

from typing import ClassVar, Sequence

import numpy as np

from .data import Record, Target

#: What a baseline reads of a record: its formula only, or its crystal structure too (``Record.structure``).
NEEDS = ("composition", "structure")


class Baseline:
    """Base class for baseline plugins.

    Subclasses set the class attributes and implement :meth:`fit` and :meth:`predict`. The core makes a
    new instance (``cls()``) for every fit, so a baseline may keep what it learnt on ``self``.
    A ``needs = "structure"`` baseline is skipped, with the reason in skipped.csv, on datasets that
    hold compositions only; it is given only records whose CIF parses.
    """

    #: Registry name (lower case), used on the command line (``--baselines``).
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: "composition" (reads ``Record.formula``) or "structure" (reads ``Record.structure`` too).
    needs: ClassVar[str] = "composition"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.needs not in NEEDS:
            raise TypeError(f"baseline {cls.__name__}: needs must be one of {', '.join(NEEDS)}, "
                            f"not {cls.needs!r}")

    def fit(self, records: Sequence[Record], target: Target) -> "Baseline":
        """Learn from the training records (``record.value`` in ``target``'s units); return the fitted
        baseline (``self`` or a copy)."""
        raise NotImplementedError

    def predict(self, records: Sequence[Record]) -> np.ndarray:
        """One predicted value per record, in the target's units."""
        raise NotImplementedError
