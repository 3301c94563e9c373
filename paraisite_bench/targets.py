"""Target kinds: what a dataset's values are, and so how a stage transforms them, trains on them and
scores the predictions.

A :class:`TargetKind` owns three things that must agree with each other:

- its transform, fitted on a dataset's values (``kind.fit(values)``) and rebuilt from a checkpoint's
  parameters (``kind.transform(params)``); the model predicts the transformed value;
- its training loss (torch), from the model's raw outputs and the values in the target's units;
- its headline metric (numpy) in the target's units, with the metric's name (the ``metric`` of an
  evaluation), and the further metrics every evaluation also carries (:meth:`TargetKind.scores`).

Two kinds are built in: :data:`KAPPA_KIND` (the paper's lattice thermal conductivity) and
:data:`REGRESSION_KIND` (any other real-valued target, e.g. a band gap). A checkpoint names its kind;
:func:`target_kind` finds it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, ClassVar

import numpy as np
import torch

from .errors import UserError

# ---- fitted transforms ------------------------------------------------------------------------

@dataclass(frozen=True)
class LogStandardTransform:
    """y = (log10(κ + 1) − mean) / std, and back."""

    mean: float
    std: float

    #: Predicted log10(κ+1) is kept in [0, 8]: κ ≥ 0 (physical) and no float32 overflow.
    LOG_RANGE: ClassVar[tuple[float, float]] = (0.0, 8.0)

    @staticmethod
    def fit(values) -> "LogStandardTransform":
        logk = np.log10(np.asarray(values, dtype=np.float64) + 1.0)
        std = float(logk.std())
        return LogStandardTransform(float(logk.mean()), std if std > 0 else 1.0)

    def forward(self, kappa):
        if isinstance(kappa, torch.Tensor):
            return (torch.log10(kappa + 1.0) - self.mean) / self.std
        return (np.log10(np.asarray(kappa, dtype=np.float64) + 1.0) - self.mean) / self.std

    def inverse(self, y):
        """κ from a (standardised) prediction. On tensors the clamp to LOG_RANGE is straight-through:
        the value is clamped but the gradient is not cut, so a model that undershoots (κ → −1, where
        10^z has no slope) or overshoots is pulled back instead of being stuck."""
        lo, hi = self.LOG_RANGE
        if isinstance(y, torch.Tensor):
            z = y * self.std + self.mean
            z = z + (z.clamp(lo, hi) - z).detach()
            return torch.pow(10.0, z) - 1.0
        z = np.clip(np.asarray(y, dtype=np.float64) * self.std + self.mean, lo, hi)
        return np.power(10.0, z) - 1.0

    def params(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class StandardTransform:
    """y = (v − mean) / std, and back."""

    mean: float
    std: float

    @staticmethod
    def fit(values) -> "StandardTransform":
        v = np.asarray(values, dtype=np.float64)
        std = float(v.std())
        return StandardTransform(float(v.mean()), std if std > 0 else 1.0)

    def forward(self, v):
        if isinstance(v, torch.Tensor):
            return (v - self.mean) / self.std
        return (np.asarray(v, dtype=np.float64) - self.mean) / self.std

    def inverse(self, y):
        if isinstance(y, torch.Tensor):
            return y * self.std + self.mean
        return np.asarray(y, dtype=np.float64) * self.std + self.mean

    def params(self) -> dict[str, float]:
        return asdict(self)


# ---- metrics (numpy, in the target's units) ---------------------------------------------------

def mape(pred, true) -> float:
    """Mean absolute percentage error as a fraction (0.34 = 34 %), as in the paper's Table I."""
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    return float(np.mean(np.abs(pred - true) / np.abs(true)))


def mae(pred, true) -> float:
    """Mean absolute error in the target's units."""
    return float(np.mean(np.abs(np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64))))


#: Predictions below this κ (W/(m K)) are clipped before taking log10: the κ transform's inverse can return
#: values ≤ 0 for a model that extrapolates far below the data (the smallest κ in our data is ~0.1).
LOG_FLOOR = 1e-3


def _log10(values) -> np.ndarray:
    return np.log10(np.maximum(np.asarray(values, dtype=np.float64), LOG_FLOOR))


def mae_log(pred, true) -> float:
    """MAE of log10 κ: the error in decades, which weighs a factor of 2 the same at 0.3 and at 300 W/(m K)."""
    return mae(_log10(pred), _log10(true))


def spearman(pred, true) -> float:
    """Spearman rank correlation (what a screening for low κ depends on); NaN when it is undefined (fewer
    than 3 values, or constant predictions such as a constant baseline's)."""
    from scipy.stats import spearmanr  # scipy only where a metric needs it

    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if len(pred) < 3 or np.ptp(pred) == 0 or np.ptp(true) == 0:
        return float("nan")
    return float(spearmanr(pred, true).statistic)


def r2(pred, true) -> float:
    """Coefficient of determination 1 − SS_res/SS_tot (NaN when the true values are constant)."""
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    ss_tot = float(np.sum((true - true.mean()) ** 2))
    return 1.0 - float(np.sum((true - pred) ** 2)) / ss_tot if ss_tot > 0 else float("nan")


def r2_log(pred, true) -> float:
    """R² on log10 κ."""
    return r2(_log10(pred), _log10(true))


#: Metrics where a larger value is better (for the others, errors, smaller is better).
HIGHER_IS_BETTER = frozenset({"spearman", "r2", "r2_log"})


# ---- losses (torch, on one training batch) ----------------------------------------------------

def mape_loss(raw: torch.Tensor, values: torch.Tensor, transform) -> torch.Tensor:
    """MAPE on the values in their units (the paper's loss on κ), through the transform's inverse."""
    pred = transform.inverse(raw)
    return torch.mean(torch.abs(pred - values) / values)


def standardised_l1_loss(raw: torch.Tensor, values: torch.Tensor, transform) -> torch.Tensor:
    """L1 on the transformed value (proportional to the MAE in the target's units)."""
    return torch.mean(torch.abs(raw - transform.forward(values)))


# ---- kinds ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TargetKind:
    """A kind of target: its transform class, training loss and metric (see the module's docstring)."""

    name: str
    transform_class: type
    #: ``loss(raw model outputs, values, fitted transform) -> scalar tensor``
    loss: Callable[[torch.Tensor, torch.Tensor, object], torch.Tensor]
    #: ``metric(predicted values, true values) -> float``, both in the target's units
    metric: Callable[[object, object], float]
    #: The metric's name, as evaluations and result columns carry it.
    metric_name: str
    #: Further metrics every evaluation carries, ``(name, metric)``, after the headline one.
    more_metrics: tuple[tuple[str, Callable[[object, object], float]], ...] = ()

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every metric an evaluation of this kind carries, the headline first."""
        return (self.metric_name, *(name for name, _ in self.more_metrics))

    def scores(self, pred, true) -> dict[str, float]:
        """Every metric of this kind for predictions ``pred`` of values ``true`` (both in the target's
        units), the headline first."""
        return {self.metric_name: self.metric(pred, true),
                **{name: fn(pred, true) for name, fn in self.more_metrics}}

    def fit(self, values):
        """The transform fitted on ``values`` (in the target's units)."""
        return self.transform_class.fit(values)

    def transform(self, params: dict):
        """The fitted transform rebuilt from its ``params()`` (e.g. stored in a checkpoint)."""
        return self.transform_class(**params)


#: Lattice thermal conductivity: log10(κ + 1) standardised, trained and scored by MAPE on κ.
KAPPA_KIND = TargetKind("kappa", LogStandardTransform, mape_loss, mape, "mape",
                        (("mae_log", mae_log), ("spearman", spearman), ("r2_log", r2_log)))
#: Any other real-valued target: standardised, trained by L1 on the standardised value, scored by MAE.
REGRESSION_KIND = TargetKind("regression", StandardTransform, standardised_l1_loss, mae, "mae",
                             (("spearman", spearman), ("r2", r2)))

KINDS: dict[str, TargetKind] = {k.name: k for k in (KAPPA_KIND, REGRESSION_KIND)}


def target_kind(name: str) -> TargetKind:
    """The built-in kind called ``name``; one clear error for any other name."""
    try:
        return KINDS[name]
    except KeyError:
        raise UserError(f"unknown target kind {name!r}: expected one of {', '.join(KINDS)}") from None
