"""A third party's dataset made of Dataset1 records (every other one, by sorted id) plus two Dataset2
records that Dataset1 does not hold: it declares ``subset_of="dataset1"``."""

from __future__ import annotations

from paraisite_bench import hookimpl
from paraisite_bench.data import DatasetSpec, read_ltc_json


def _load(ctx):
    d1 = sorted(read_ltc_json(ctx.path("ltc", "dataset1.json.gz"), "d1-half")[1], key=lambda r: r.id)
    d2 = sorted(read_ltc_json(ctx.path("ltc", "dataset2.json.gz"), "d1-half")[1], key=lambda r: r.id)
    return d1[::2] + d2[:2]


@hookimpl
def register_datasets(register):
    register(DatasetSpec(name="d1-half", description="every other Dataset1 record, and two of Dataset2",
                         loader=_load, subset_of="dataset1"))
