"""Built-in datasets: the ParAIsite LTC datasets (Dataset1, Dataset2, MIX) and AFLOW AGL.

Read from ``<data root>/ltc/<file>.json.gz``: ``{name, description, records:[{id, formula, kappa, cif}]}``.
"""

from __future__ import annotations

from functools import partial

from paraisite_bench import hookimpl
from paraisite_bench.data import DatasetSpec, LoadContext, read_ltc_json

_FILES = {
    "dataset1": (
        "dataset1.json.gz", "Dataset1",
        "95 rocksalt/zincblende/wurtzite compounds, κ at 300 K from phono3py (PhononDB), MP structures",
        "Seko et al., PRL 115, 205901 (2015); Togo et al., PRB 91, 094306 (2015)",
    ),
    "dataset2": (
        "dataset2.json.gz", "Dataset2",
        "143 half-Heusler compounds, κ at 300 K, MP structures",
        "Miyazaki et al., Sci. Rep. 11, 13410 (2021)",
    ),
    "aflow": (
        "aflow_agl.json.gz", "AFLOW",
        "4,394 AFLOW-ICSD structures with the AGL (quasi-harmonic Debye-Grüneisen) κ at 300 K",
        "Toher et al., PRB 90, 174107 (2014); Curtarolo et al., Comput. Mater. Sci. 58, 218 (2012)",
    ),
}


def _load(filename: str, name: str, ctx: LoadContext):
    _doc, records = read_ltc_json(ctx.path("ltc", filename), name)
    return records


@hookimpl
def register_datasets(register):
    for name, (filename, label, description, citation) in _FILES.items():
        register(DatasetSpec(name=name, display_name=label, description=description, citation=citation,
                             loader=partial(_load, filename, name)))
    register(DatasetSpec(name="mix", display_name="MIX", components=("dataset1", "dataset2"),
                         description="Dataset1 ∪ Dataset2; split r = Dataset1 split r ∪ Dataset2 split r",
                         citation="Klochko et al., arXiv:2411.18259"))
