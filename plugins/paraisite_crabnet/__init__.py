"""Built-in CrabNet backbone (Wang et al., npj Comput. Mater. 7, 77 (2021)): composition input,
mat2vec element embeddings, CrabNet's own model class ``crabnet.kingcrab.SubCrab`` trained inside
paraisite-bench's stages (never CrabNet's ``fit()`` wrapper).

Representation: the 128-d vector that SubCrab's ``output_nn`` feeds to its ``fc_out``, mean-pooled
over the formula's real elements. ``fc_out`` is linear, so ``fc_out(representation)`` equals SubCrab's
element-averaged output before its uncertainty split: tests/test_crabnet.py proves it. The ParAIsite
head goes on top, as for MEGNet.

Sizes: ``PARAISITE_BENCH_CRABNET="d_model=64,N=2,heads=4,dim_feedforward=256"`` (any of d_model, N,
heads, dim_feedforward, dropout) overrides the defaults; the settings are part of every feature-cache
and stage key. Default: d_model 128 (≈3.5 M parameters with CrabNet's feed-forward width 2048),
≈4.5 s per epoch on expt_gap's 3.7 k training formulas on one thread, a quarter of the published
d_model 512 (≈12 M parameters, ≈14 s per epoch), so that a pretraining stage fits the shared machine.

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

ENV = "PARAISITE_BENCH_CRABNET"
DEFAULTS = {"d_model": 128, "N": 3, "heads": 4, "dim_feedforward": 2048, "dropout": 0.1}
INSTALL = "pip install --no-deps --ignore-requires-python crabnet==2.0.8 (see README set-up)"
#: CrabNet's element order (crabnet.utils.utils.get_edm and data/element_properties/mat2vec.csv).
MAX_ELEMENTS = 16


def _kingcrab():
    """``crabnet.kingcrab`` imported without its global seeding leaking into our RNG streams."""
    import sys

    if "crabnet.kingcrab" in sys.modules:
        return sys.modules["crabnet.kingcrab"]
    import random

    import numpy as np

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            import crabnet.kingcrab as kingcrab
    except ModuleNotFoundError:
        raise UserError(f"the crabnet backbone needs the crabnet package: {INSTALL}") from None
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return kingcrab


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
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in DEFAULTS:
            raise UserError(f"{ENV}={raw!r}: unknown setting {key!r}; known: {', '.join(DEFAULTS)}")
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

    def build(self) -> nn.Module:
        return CrabNetRepresentation(self._settings)

    def resolve_source(self, source: str) -> str:
        raise UserError("crabnet has no published weights: use a strategy that pretrains on a dataset "
                        "(pretrained:<dataset>, double:<dataset>) or starts from random weights (scratch)")


@hookimpl
def register_backbones(register):
    register(CrabNetBackbone)
