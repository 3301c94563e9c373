"""The backbone contract and the ParAIsite head that the core puts on top of every backbone."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import nn

from .errors import UserError


@dataclass(frozen=True)
class Pretraining:
    """What stands in for published weights for a backbone that has none: a stage trained from random
    weights on ``dataset``, with these stage ``options`` (``epochs``, ``batch_size``, ``lr``, ``recipe``…, see
    :data:`paraisite_bench.protocol.STAGE_OPTION_TYPES`; the protocol's own per-dataset options win, so
    ``--stage-options`` changes them). The strategies that start from ``Init.weights("default")`` (the
    paper's Steps 2 and 3) then start from this stage. Like published weights it is one stage whatever the
    split, seed, strategy or target (split 0 of ``dataset`` selects its epoch), so it is trained once per
    machine (the stage cache keeps it); ``why`` is shown in the report."""

    dataset: str
    options: Mapping[str, Any] = field(default_factory=dict)
    why: str = ""


class Backbone:
    """Base class for backbone plugins.

    Subclasses set the class attributes and implement :meth:`featurise`, :meth:`collate` and
    :meth:`build`; a backbone with published weights also implements :meth:`load_weights`.
    The module returned by :meth:`build` maps a collated batch to a ``(batch, representation_dim)``
    tensor: the backbone's last hidden representation, on which the ParAIsite head is put.
    """

    #: Registry name (lower case), used on the command line.
    name: ClassVar[str] = ""
    #: "structure" (needs a CIF per record) or "composition" (needs only the formula).
    input_kind: ClassVar[str] = "structure"
    representation_dim: ClassVar[int] = 0
    description: ClassVar[str] = ""
    #: Published-weights sources: name -> one-line description.
    weight_sources: ClassVar[dict[str, str]] = {}
    #: The source that ``Init.weights("default")`` means, or None if the backbone has none.
    default_weights: ClassVar[str | None] = None
    #: For a backbone without published weights: the pretraining that ``Init.weights("default")`` means
    #: instead (``--pretraining BACKBONE=DATASET`` picks another dataset), or None.
    default_pretraining: ClassVar[Pretraining | None] = None

    def settings(self) -> dict[str, Any]:
        """Everything that changes the model or its input: the options of :meth:`featurise` and
        :meth:`build` (cutoffs, widths, layer counts…). Part of the key of every feature-cache entry and
        every trained stage, next to the plugin's distribution, version and (unless installed from a
        built wheel) source hash — see docs/writing-a-backbone-plugin.md, "What keys a result"."""
        return {}

    def featurise(self, record) -> Any:
        """Turn one record into model input; raise :class:`~paraisite_bench.errors.RecordError` if it
        can't."""
        raise NotImplementedError

    def collate(self, features: Sequence[Any]) -> Any:
        """Batch a list of featurised records."""
        raise NotImplementedError

    def batcher(self, features: Sequence[Any]) -> Callable[[Sequence[int]], Any]:
        """A function ``indices -> batch`` over a fixed list of featurised records, called once per
        training stage and then once per step.

        Optional: the default collates ``[features[i] for i in indices]`` with :meth:`collate`.
        A backbone may override it with a faster index-based path (e.g. pre-concatenated tensors
        sliced with offsets) that must return a batch the module treats exactly as
        ``collate([features[i] for i in indices])``.
        """
        feats = list(features)
        return lambda indices: self.collate([feats[i] for i in indices])

    def build(self) -> nn.Module:
        """A module with random weights mapping a batch to ``(batch, representation_dim)``."""
        raise NotImplementedError

    def accelerate(self, module: nn.Module, sample: Any) -> str | None:
        """Optional: make ``module`` faster for the training steps of a long stage without changing
        the function it computes (e.g. ``torch.compile`` its forward), or do nothing.

        Called by the fast training loop, when compilation is allowed (``PARAISITE_BENCH_COMPILE`` /
        ``--compile``: "auto" = stages of at least ``compilation.COMPILE_MIN_STEPS`` steps, "on", "off"),
        after the weights are loaded and before the first step, with ``sample``: a training batch
        from :meth:`batcher`, already on the stage's device. It must leave the parameters, their
        gradients (None) and the random number streams as they were, and should fall back to the
        plain module on failure. Return a one-line description for the run's provenance, or None
        when nothing changed. The default does nothing.
        """
        return None

    def load_weights(self, module: nn.Module, source: str, data_dir: Path) -> dict[str, Any]:
        """Load published weights ``source`` into ``module`` strictly; return what was loaded.

        The returned dict holds at least ``tensors_loaded`` and ``tensors_total``.
        """
        raise NotImplementedError(f"backbone {self.name!r} has no published weights")

    def resolve_source(self, source: str) -> str:
        if source == "default":
            if not self.default_weights:
                raise UserError(f"backbone {self.name!r} has no published weights: "
                                "use a strategy that starts from random weights (e.g. scratch)")
            return self.default_weights
        return source

    def to_device(self, batch: Any, device: torch.device) -> Any:
        return batch.to(device) if hasattr(batch, "to") else batch


class ParAIsiteHead(nn.Module):
    """The ParAIsite MLP: dense layers with ReLU (paper: 350, 350, 350), then one output."""

    def __init__(self, in_dim: int, hidden: Sequence[int] = (350, 350, 350)):
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            in_dim = width
        layers.append(nn.Linear(in_dim, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x).squeeze(-1)


class ParAIsiteModel(nn.Module):
    """Backbone representation → ParAIsite head → standardised log10(κ+1)."""

    def __init__(self, backbone_module: nn.Module, representation_dim: int, hidden: Sequence[int]):
        super().__init__()
        self.backbone = backbone_module
        self.head = ParAIsiteHead(representation_dim, hidden)

    def forward(self, batch: Any) -> torch.Tensor:
        rep = self.backbone(batch)
        return self.head(rep.reshape(rep.shape[0], -1))
