"""Built-in CrabNet backbone (Wang et al., npj Comput. Mater. 7, 77 (2021)): composition input,
mat2vec element embeddings, CrabNet's own model class ``crabnet.kingcrab.SubCrab`` trained inside
paraisite-bench's stages (never CrabNet's ``fit()`` wrapper).

Representation: the 128-d vector that SubCrab's ``output_nn`` feeds to its ``fc_out``, mean-pooled
over the formula's real elements. ``fc_out`` is linear, so ``fc_out(representation)`` equals SubCrab's
element-averaged output before its uncertainty split: tests/test_crabnet.py proves it. The ParAIsite
head goes on top, as for MEGNet.

Sizes: ``PARAISITE_BENCH_CRABNET=published`` is the published size (SubCrab's defaults: d_model 512, N 3,
heads 4, dim_feedforward 2048, dropout 0.1); ``PARAISITE_BENCH_CRABNET="d_model=64,N=2,heads=4"`` (any of
d_model, N, heads, dim_feedforward, dropout, after ``published`` or alone) overrides the defaults; the
settings are part of every feature-cache and stage key. Default: d_model 128 (≈3.5 M parameters with
CrabNet's feed-forward width 2048), ≈4.5 s per epoch on expt_gap's 3.7 k training formulas on one
thread, a quarter of the published d_model 512 (≈12 M parameters, ≈14 s per epoch), so that a
pretraining stage fits the shared machine. The representation is 128 wide at every size: SubCrab's
``output_nn`` ends on a 128-wide hidden layer whatever d_model (``out_hidden`` [1024, 512, 256, 128]).

Training recipe ``crabnet`` (:class:`CrabNetRecipe`, a stage option ``recipe=crabnet``): CrabNet's own
Lamb + Lookahead + SWA with its cyclic learning rate.

Batches: :meth:`CrabNetBackbone.batcher` slices pre-padded tensors (the same batch as ``collate``).

crabnet is imported lazily and its quirks are contained: importing ``crabnet.kingcrab`` seeds torch
and numpy globally (the RNG states are restored around the import); the matplotlib font change and
the writes into the current directory come from modules and methods we never use (``crabnet.utils``
plotting helpers, ``CrabNet.fit``).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple, Sequence

import torch
from torch import nn

from paraisite_bench import hookimpl
from paraisite_bench.backbone import Backbone, Pretraining
from paraisite_bench.errors import RecordError, UserError
from paraisite_bench.recipe import Recipe

ENV = "PARAISITE_BENCH_CRABNET"
DEFAULTS = {"d_model": 128, "N": 3, "heads": 4, "dim_feedforward": 2048, "dropout": 0.1}
#: The published size: ``crabnet.kingcrab.SubCrab``'s own defaults (crabnet 2.0.8, kingcrab.py,
#: ``SubCrab.__init__``), the size of Wang et al. 2021.
PUBLISHED = {"d_model": 512, "N": 3, "heads": 4, "dim_feedforward": 2048, "dropout": 0.1}
INSTALL = "pip install --no-deps --ignore-requires-python crabnet==2.0.8 (see README set-up)"
#: CrabNet's element order (crabnet.utils.utils.get_edm and data/element_properties/mat2vec.csv).
MAX_ELEMENTS = 16


def _quiet_import(module: str):
    """Import one of crabnet's modules without its side effects leaking out: crabnet's modules seed torch
    and numpy globally at import, and ``crabnet.utils.utils`` changes matplotlib's font size."""
    import importlib
    import random
    import sys

    import numpy as np

    if module in sys.modules:
        return sys.modules[module]
    rc = None
    if module.startswith("crabnet.utils"):
        import matplotlib

        rc = dict(matplotlib.rcParams)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            return importlib.import_module(module)
    except ModuleNotFoundError:
        raise UserError(f"the crabnet backbone needs the crabnet package: {INSTALL}") from None
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
        if rc is not None:
            matplotlib.rcParams.update(rc)


def _kingcrab():
    """``crabnet.kingcrab`` imported without its global seeding leaking into our RNG streams."""
    return _quiet_import("crabnet.kingcrab")


def _parse_formula(formula: str) -> dict[str, float]:
    from crabnet.utils.composition import _element_composition  # CrabNet's own parser

    return _element_composition(formula)


def element_symbols() -> list[str]:
    import csv
    from importlib.resources import files

    path = files("crabnet").joinpath("data", "element_properties", "mat2vec.csv")
    with path.open("r", encoding="utf-8") as fh:
        return [row[0] for i, row in enumerate(csv.reader(fh)) if i > 0]


def settings_from_env() -> dict[str, Any]:
    out = dict(DEFAULTS)
    raw = os.environ.get(ENV, "").strip()
    for item in filter(None, (p.strip() for p in raw.split(","))):
        if item == "published":
            out.update(PUBLISHED)
            continue
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in DEFAULTS:
            raise UserError(f"{ENV}={raw!r}: unknown setting {key!r}; known: published (the published size), "
                            f"{', '.join(DEFAULTS)}")
        try:
            out[key] = type(DEFAULTS[key])(value)
        except ValueError:
            raise UserError(f"{ENV}={raw!r}: {key} needs a {type(DEFAULTS[key]).__name__}") from None
    if out["d_model"] % out["heads"] or out["d_model"] % 2:
        raise UserError(f"{ENV}: d_model ({out['d_model']}) must be even and divisible by heads "
                        f"({out['heads']})")
    return out


class CompositionBatch(NamedTuple):
    src: torch.Tensor  # (batch, n) element numbers (1-based, 0 = padding), CrabNet's EDM
    frac: torch.Tensor  # (batch, n) element fractions

    def to(self, device):
        return CompositionBatch(self.src.to(device), self.frac.to(device))


class PaddedBatcher:
    """``indices -> CompositionBatch`` over a fixed list of featurised formulas (see
    :meth:`CrabNetBackbone.batcher`)."""

    def __init__(self, features: Sequence[Any]):
        feats = list(features)
        self.lengths = [len(s) for s, _ in feats]
        width = max(self.lengths, default=0)
        self.src = torch.zeros(len(feats), width, dtype=torch.long)
        self.frac = torch.zeros(len(feats), width, dtype=torch.float32)
        for i, (s, f) in enumerate(feats):
            self.src[i, : len(s)] = s
            self.frac[i, : len(f)] = f

    def __call__(self, indices: Sequence[int]) -> CompositionBatch:
        n = max(self.lengths[i] for i in indices)  # Python ints: no tensor reduction per step
        rows = torch.as_tensor(indices, dtype=torch.long)
        return CompositionBatch(self.src[rows, :n], self.frac[rows, :n])


class CrabNetRepresentation(nn.Module):
    """SubCrab up to the 128-d input of ``output_nn.fc_out``, mean-pooled over real elements."""

    def __init__(self, settings: dict[str, Any]):
        super().__init__()
        import warnings

        kingcrab = _kingcrab()
        with warnings.catch_warnings():  # torch's nested-tensor note about CrabNet's batch_first=False
            warnings.simplefilter("ignore", UserWarning)
            self.subcrab = kingcrab.SubCrab(out_dims=3, d_model=settings["d_model"], N=settings["N"],
                                            heads=settings["heads"],
                                            dim_feedforward=settings["dim_feedforward"],
                                            dropout=settings["dropout"], elem_prop="mat2vec")

    def hidden(self, src: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
        """Per-element 128-d vectors (what ``output_nn`` feeds to ``fc_out``)."""
        fea = self.subcrab.encoder(src, frac)
        net = self.subcrab.output_nn
        for fc, res_fc, act in zip(net.fcs, net.res_fcs, net.acts):
            fea = act(fc(fea)) + res_fc(fea)
        return fea

    def forward(self, batch: CompositionBatch) -> torch.Tensor:
        src, frac = batch
        fea = self.hidden(src, frac)
        real = (src != 0).unsqueeze(-1).to(fea.dtype)
        return (fea * real).sum(dim=1) / real.sum(dim=1)

    def crabnet_output(self, batch: CompositionBatch) -> torch.Tensor:
        """SubCrab's own output computed from the representation (for checking the identity)."""
        out = self.subcrab.output_nn.fc_out(self.forward(batch))
        value, logits = out.chunk(2, dim=-1)
        probability = torch.ones_like(value)
        probability[:, : logits.shape[-1]] = torch.sigmoid(logits)
        return value * probability


class CrabNetBackbone(Backbone):
    name = "crabnet"
    input_kind = "composition"
    representation_dim = 128
    description = ("CrabNet composition transformer (crabnet 2.0.8 SubCrab, mat2vec embeddings; "
                   f"size via ${ENV}, default d_model {DEFAULTS['d_model']})")
    weight_sources: dict[str, str] = {}
    default_weights = None
    default_pretraining = Pretraining(
        "mp_e_form", {"epochs": 30, "batch_size": 256, "lr": 3e-4, "cosine_tmax": 30},
        why="formation energy per atom of Materials Project compositions (matbench_mp_e_form, shipped with "
            "crabnet), the quantity and source of MEGNet's published Eform weights")

    def __init__(self):
        self._settings = settings_from_env()
        self._symbols: dict[str, int] | None = None

    def settings(self) -> dict[str, Any]:
        return {**self._settings, "elem_prop": "mat2vec", "max_elements": MAX_ELEMENTS, "version": 1}

    def featurise(self, record):
        if self._symbols is None:
            try:
                self._symbols = {s: i + 1 for i, s in enumerate(element_symbols())}
            except ModuleNotFoundError:
                raise UserError(f"the crabnet backbone needs the crabnet package: {INSTALL}") from None
        try:
            comp = _parse_formula(record.formula)
        except Exception as exc:
            raise RecordError(record.source, record.id, f"formula {record.formula!r} does not parse "
                              f"({type(exc).__name__})", "give a chemical formula such as Fe2O3") from None
        if not comp:
            raise RecordError(record.source, record.id, "empty formula",
                              "give a chemical formula such as Fe2O3")
        unknown = sorted(set(comp) - set(self._symbols))
        if unknown:
            raise RecordError(record.source, record.id, f"element(s) {', '.join(unknown)} unknown to mat2vec",
                              "remove this record or use another backbone")
        items = sorted(comp.items(), key=lambda kv: -kv[1])[:MAX_ELEMENTS]  # CrabNet's EDM order
        total = sum(v for _, v in items)
        return (torch.tensor([self._symbols[e] for e, _ in items], dtype=torch.long),
                torch.tensor([v / total for _, v in items], dtype=torch.float32))

    def collate(self, features: Sequence[Any]) -> CompositionBatch:
        n = max(len(s) for s, _ in features)
        src = torch.zeros(len(features), n, dtype=torch.long)
        frac = torch.zeros(len(features), n, dtype=torch.float32)
        for i, (s, f) in enumerate(features):
            src[i, : len(s)] = s
            frac[i, : len(f)] = f
        return CompositionBatch(src, frac)

    def batcher(self, features: Sequence[Any]):
        """Index-based batches over pre-padded tensors: the batch of ``indices`` is rows ``indices`` of
        one (records, longest formula) tensor pair cut to the batch's longest formula, which is exactly
        ``collate([features[i] for i in indices])`` (tests/test_crabnet.py) without a Python loop over
        the batch's records at every step."""
        return PaddedBatcher(features)

    def build(self) -> nn.Module:
        return CrabNetRepresentation(self._settings)

    def resolve_source(self, source: str) -> str:
        raise UserError("crabnet has no published weights: use a strategy that pretrains on a dataset "
                        "(pretrained:<dataset>, double:<dataset>) or starts from random weights (scratch)")


def _with_hook_tables(optimizer):
    """crabnet's wrapper optimisers skip ``torch.optim.Optimizer.__init__``: give them the (empty) hook
    tables it sets. Without them a second instance in a process fails at its first step, once torch has
    wrapped the class's ``step`` in its hook-calling profiler wrapper (``zero_grad`` does that)."""
    from collections import OrderedDict

    for table in ("step_pre", "step_post", "state_dict_pre", "state_dict_post", "load_state_dict_pre",
                  "load_state_dict_post"):
        name = f"_optimizer_{table}_hooks"
        if not hasattr(optimizer, name):
            setattr(optimizer, name, OrderedDict())
    return optimizer


class CrabNetRecipe(Recipe):
    """CrabNet 2.0.8's own training recipe, as ``crabnet.crabnet_.CrabNet.fit`` sets it up, with crabnet's
    optimiser classes: Lamb (betas 0.9/0.999, eps 1e-6, weight decay 0) wrapped by Lookahead (alpha 0.5,
    k 6) wrapped by crabnet's SWA; CyclicLR between ``base_lr`` 1e-4 and ``max_lr`` 6e-3 (triangular, no
    momentum cycling) with ``step_size_up`` = ``epochs_step`` (10) epochs of steps, stepped after every
    batch; an SWA update (crabnet's ``SWA.update_swa`` rule, driven by the validation metric) at the end
    of every ``2 * epochs_step``-th epoch from epoch ``2 * epochs_step`` on (crabnet's 0-based epochs 19,
    39, ...: the troughs of the cycle). crabnet's average is not a plain mean: a 2 % improvement on the
    metric of its last restart restarts it, snapshots within 1 % of the best are added, the n-th with
    weight (1/(n+1))^(1/3) (tests/test_crabnet.py recomputes it). The averaged weights are scored on the
    validation part after the last epoch and selected when better than the best epoch (see
    :class:`paraisite_bench.recipe.Recipe`).
    ``options`` may set ``base_lr``, ``max_lr`` and ``epochs_step``; ``options["lr"]`` is not used
    (CyclicLR sets the lr from the first step).

    What differs from ``CrabNet.fit`` and why:

    - the model is ours: the ParAIsite head on the pooled representation, trained with the target kind's
      loss (the same loss as every other stage, so that recipes are compared on one objective), not
      SubCrab's own output with its uncertainty and RobustL1;
    - no jitter of the element fractions (``CrabNet._add_jitter``): batches are the backbone's, the same
      for every recipe;
    - crabnet evaluates the validation set after every batch of a check epoch and calls ``update_swa``
      each time; we call it once, at the end of the check epoch, with the epoch's validation metric
      (crabnet's MAE on the validation data, ours the target kind's metric: MAE for the matbench
      tasks): one snapshot per check epoch instead of one per batch;
    - crabnet stops after 3 check epochs without an SWA update; our stage runs its ``epochs`` (or stops
      by the loop's own ``early_stop``) and selects between the best epoch and the averaged weights,
      where crabnet always ends on the averaged ones.
    """

    name = "crabnet"
    description = "CrabNet's Lamb + Lookahead + SWA with a cyclic lr (crabnet 2.0.8 CrabNet.fit)"

    def __init__(self, model, options, steps_per_epoch, loop, device):
        lamb = _quiet_import("crabnet.utils.utils")
        swa = _quiet_import("crabnet.utils.optim")
        self.model = model
        self.params = list(model.parameters())
        base = lamb.Lamb(self.params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0)
        self.optimizer = _with_hook_tables(swa.SWA(_with_hook_tables(
            lamb.Lookahead(base_optimizer=base, alpha=0.5, k=6))))
        self.epochs_step = int(options.get("epochs_step", 10))
        self.schedule = torch.optim.lr_scheduler.CyclicLR(
            self.optimizer, base_lr=float(options.get("base_lr", 1e-4)),
            max_lr=float(options.get("max_lr", 6e-3)), cycle_momentum=False,
            step_size_up=self.epochs_step * steps_per_epoch)
        #: (epoch, validation metric, whether the weights were added to the average) of each check epoch
        self.checks: list[tuple[int, float, bool]] = []

    def after_step(self):
        self.schedule.step()

    def after_epoch(self, epoch, val_metric):
        period = 2 * self.epochs_step
        if epoch % period == 0:
            self.optimizer.update_swa(val_metric)
            self.checks.append((epoch, float(val_metric), bool(self.optimizer.minimum_found)))

    def averaged_state(self):
        if not any("swa_buffer" in self.optimizer.state[p] for p in self.params):
            return None
        self.optimizer.swap_swa_sgd()
        try:
            return {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        finally:
            self.optimizer.swap_swa_sgd()


@hookimpl
def register_backbones(register):
    register(CrabNetBackbone)


@hookimpl
def register_recipes(register):
    register(CrabNetRecipe)
