"""Training recipes: the optimiser, its learning-rate schedule and any weight averaging of a stage.

A stage's options may name a recipe (``options["recipe"]``, registered by a plugin through
``register_recipes``); without one a stage uses :class:`AdamCosine`, the paper's loop.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn


class Recipe:
    """Base class for training recipes (the contract of the ``register_recipes`` hook).

    The training loop builds one instance per stage with ``(model, options, steps_per_epoch, loop,
    device)``: the stage's model (already on ``device``), the stage's options (the recipe may read
    its own optional keys from them; they are part of the stage key like every option), the number of
    optimiser steps in one epoch, and the training loop's name (``"fast"`` or ``"plain"``). It then
    uses :attr:`optimizer` for every step (``zero_grad``, ``step``) and calls

    - :meth:`after_step` after each optimiser step (per-batch schedules),
    - :meth:`after_epoch` after each epoch with the epoch (1-based) and the validation metric of the
      weights at its end (per-epoch schedules, the decision to take a weight snapshot),
    - :meth:`lr` once per epoch, before :meth:`after_epoch`, for the learning curves.

    Weight averaging and epoch selection: when training ends, :meth:`averaged_state` may return a
    state dict of the whole model (e.g. SWA weights). The loop then scores those weights on the
    stage's validation part like one more candidate after the last epoch: they are the stage's
    selected weights when their validation metric is strictly better than the best epoch's (then
    ``best_epoch`` is the last epoch and ``best_val`` their metric), and the stage's summary records
    ``{"averaged": {"val": metric, "selected": bool}}`` either way. The ``last`` reading (the weights
    after the last epoch) is never replaced by them.
    """

    #: Registry name (lower case), the value of ``options["recipe"]``.
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, model: nn.Module, options: dict, steps_per_epoch: int, loop: str,
                 device: torch.device):
        self.optimizer: torch.optim.Optimizer

    def after_step(self) -> None:
        """Called after each optimiser step."""

    def after_epoch(self, epoch: int, val_metric: float) -> None:
        """Called after each epoch (1-based) with the validation metric of the weights at its end."""

    def lr(self) -> float:
        """The learning rate to record in the epoch's curve row."""
        return self.optimizer.param_groups[0]["lr"]

    def averaged_state(self) -> dict[str, Any] | None:
        """The model's averaged weights (a full ``state_dict``) at the end of training, or None."""
        return None


def adam(params, lr: float, loop: str) -> torch.optim.Optimizer:
    """Adam as the training loops use it: one fused kernel for all parameter tensors in the fast loop
    (same update rule as the default), the default implementation in the plain loop."""
    if loop == "fast":
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError):
            params = list(params)  # fused Adam is not available for this device
            return torch.optim.Adam(params, lr=lr, foreach=True)
    return torch.optim.Adam(params, lr=lr)


class AdamCosine(Recipe):
    """The paper's recipe, used when a stage names none: Adam at ``options["lr"]``, cosine annealing
    over ``options["cosine_tmax"]`` epochs stepped once per epoch (constant lr when it is 0)."""

    name = "adam-cosine"
    description = "Adam, cosine annealing stepped per epoch (the default)"

    def __init__(self, model, options, steps_per_epoch, loop, device):
        self.optimizer = adam(model.parameters(), options["lr"], loop)
        tmax = options["cosine_tmax"]
        self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=tmax)
                          if tmax else None)

    def after_epoch(self, epoch, val_metric):
        if self.scheduler is not None:
            self.scheduler.step()
