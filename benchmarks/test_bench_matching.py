"""Structure matching AFLOW × (Dataset1, Dataset2) (paraisite_bench.overlap.structure_matches): cold
(empty overlap cache: formula keys, CIF parsing of the records whose formula both sides hold, and
StructureMatcher) vs warm (the same matches read from ``cache_dir/overlap``, what every later command
pays). Each round gets a fresh Context with its datasets loaded (reading the JSON is not matching).

Run: ``.venv/bin/python -m pytest benchmarks/test_bench_matching.py -m '' --benchmark-only -q``."""

from __future__ import annotations

import itertools

import pytest

from paraisite_bench.context import Context
from paraisite_bench.overlap import structure_matches
from paraisite_bench.plugins import load_registry
from paraisite_bench.protocol import Protocol

PAIRS = (("aflow", "dataset1"), ("aflow", "dataset2"))


def _context(data_dir, cache):
    ctx = Context(load_registry(), data_dir, Protocol(), cache)
    for name in ("aflow", "dataset1", "dataset2"):
        ctx.dataset(name)
    return ctx


def _match_all(ctx):
    return [structure_matches(ctx, a, b) for a, b in PAIRS]


@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_structure_matching(benchmark, data_dir, tmp_path, cache):
    counter = itertools.count()
    warm_dir = tmp_path / "warm"
    if cache == "warm":
        _match_all(_context(data_dir, warm_dir))

    def setup():
        where = warm_dir if cache == "warm" else tmp_path / f"cold{next(counter)}"
        return (_context(data_dir, where),), {}

    matches = benchmark.pedantic(_match_all, setup=setup, rounds=3, iterations=1)
    benchmark.extra_info["pairs_matched"] = [len(m) for m in matches]  # 11 and 59 on the shared data
