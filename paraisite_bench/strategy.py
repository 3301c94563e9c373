"""Transfer strategies: chains of training stages, each stage = (initialisation, dataset)."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Placeholder for the run's target (train) dataset in a strategy's stage chain.
TARGET = "<target>"


@dataclass(frozen=True)
class Init:
    """How a stage's model starts.

    - ``Init.random()``: random weights (backbone and head);
    - ``Init.weights(source)``: the backbone's named published weights (``"default"`` = the
      backbone's default source), head random;
    - ``Init.previous()``: the whole model (backbone and head) selected by the previous stage.
    """

    kind: str  # "random" | "weights" | "previous"
    source: str = ""

    @staticmethod
    def random() -> "Init":
        return Init("random")

    @staticmethod
    def weights(source: str = "default") -> "Init":
        return Init("weights", source)

    @staticmethod
    def previous() -> "Init":
        return Init("previous")

    def __str__(self) -> str:
        """The one string form of an init (``random``, ``previous``, ``weights:<source>``): what stage
        keys hash, labels show and the store keeps; :meth:`parse` reads it back (a stored stage)."""
        return f"weights:{self.source}" if self.kind == "weights" else self.kind

    @staticmethod
    def parse(text: str) -> "Init":
        """The init whose string form (:meth:`__str__`) is ``text``."""
        kind, _, source = text.partition(":")
        if kind not in ("random", "weights", "previous") or (kind == "weights") != bool(source):
            raise ValueError(f"not an init: {text!r}")
        return Init(kind, source)


@dataclass(frozen=True)
class Stage:
    init: Init
    dataset: str  # a dataset name, or TARGET


@dataclass(frozen=True)
class Strategy:
    name: str
    stages: tuple[Stage, ...]
    description: str = ""
    #: Target datasets this strategy is not run on (e.g. ``double`` is not trained on AFLOW itself).
    skip_targets: tuple[str, ...] = ()
    plugin: str = field(default="", compare=False)

    def __post_init__(self):
        if not self.stages:
            raise ValueError(f"strategy {self.name!r} has no stages")
        if self.stages[0].init.kind == "previous":
            raise ValueError(f"strategy {self.name!r}: the first stage cannot start from a previous stage")
        if any(s.init.kind != "previous" for s in self.stages[1:]):
            raise ValueError(f"strategy {self.name!r}: later stages must start from Init.previous()")
        if self.stages[-1].dataset != TARGET:
            raise ValueError(f"strategy {self.name!r}: the last stage must train on TARGET")

    def chain(self, target: str) -> list[Stage]:
        """The stages with TARGET replaced by ``target``."""
        return [Stage(s.init, target if s.dataset == TARGET else s.dataset) for s in self.stages]
