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
        name="pretrained", description="the backbone's published weights → target",
        stages=(Stage(Init.weights("default"), TARGET),),
    ))
    register(Strategy(
        name="double",
        description="published weights → AFLOW AGL → target (the AFLOW stage is shared)",
        stages=(Stage(Init.weights("default"), "aflow"), Stage(Init.previous(), TARGET)),
        skip_targets=("aflow",),
    ))
