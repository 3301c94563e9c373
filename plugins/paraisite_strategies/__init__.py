"""Built-in transfer strategies of the ParAIsite paper (Steps 1-3)."""

from __future__ import annotations

from paraisite_bench import hookimpl
from paraisite_bench.strategy import TARGET, Init, Stage, Strategy


@hookimpl
def register_strategies(register):
    register(Strategy(
        name="scratch", description="random weights → target",
        stages=(Stage(Init.random(), TARGET),),
    ))
    register(Strategy(
        name="pretrained",
        description="the backbone's published weights (or its default pretraining) → target",
        stages=(Stage(Init.weights("default"), TARGET),),
    ))
    register(Strategy(
        name="double",
        description="published weights (or the default pretraining) → AFLOW AGL → target "
                    "(the AFLOW stage is shared)",
        stages=(Stage(Init.weights("default"), "aflow"), Stage(Init.previous(), TARGET)),
        skip_targets=("aflow",),
    ))


def pretraining_strategies(dataset: str, label: str = "", aflow: str = "aflow") -> list[Strategy]:
    """Strategies that pretrain on a dataset instead of loading published weights, for backbones
    without published weights (e.g. CrabNet); a dataset plugin registers them for its datasets:

    - ``pretrained:<dataset>``: random weights → <dataset> → target;
    - ``double:<dataset>``: random weights → <dataset> → AFLOW AGL → target (the paper's Step 3 with
      pretraining on <dataset> in place of published weights).

    The pretraining stage of split r is keyed like any stage, so it is trained once and shared by
    every target and strategy that starts with it.
    """
    label = label or dataset
    out = [Strategy(
        name=f"pretrained:{dataset}", description=f"random weights → {label} → target",
        stages=(Stage(Init.random(), dataset), Stage(Init.previous(), TARGET)),
        skip_targets=(dataset,),
    )]
    if dataset != aflow and "aflow" not in dataset:
        out.append(Strategy(
            name=f"double:{dataset}", description=f"random weights → {label} → AFLOW AGL → target",
            stages=(Stage(Init.random(), dataset), Stage(Init.previous(), aflow),
                    Stage(Init.previous(), TARGET)),
            skip_targets=(dataset, aflow),
        ))
    return out
