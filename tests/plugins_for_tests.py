"""Plugins used by the tests, loaded with ``--plugin plugins_for_tests`` exactly as a third party's
module would be: a strategy that the core has never heard of, and a dataset read from a file that
the tests fill with good and malformed records."""

from __future__ import annotations

import os
from pathlib import Path

from paraisite_megnet import MEGNetBackbone

from paraisite_bench import hookimpl
from paraisite_bench.data import DatasetSpec, read_ltc_json
from paraisite_bench.strategy import TARGET, Init, Stage, Strategy


def _load_file(ctx):
    path = Path(os.environ["PB_TEST_DATASET"])
    return read_ltc_json(path, "userfile")[1]


@hookimpl
def register_strategies(register):
    register(Strategy(name="Double-D2", description="published weights → Dataset2 → target",
                      stages=(Stage(Init.weights(), "dataset2"), Stage(Init.previous(), TARGET))))


@hookimpl
def register_datasets(register):
    register(DatasetSpec(name="userfile", description="records from $PB_TEST_DATASET", loader=_load_file))


class FailingBackbone(MEGNetBackbone):
    """MEGNet whose model cannot be built: its jobs fail, the rest of the grid must still run."""

    name = "failing"

    def build(self):
        raise RuntimeError("this backbone always fails to build")


@hookimpl
def register_backbones(register):
    register(FailingBackbone)
