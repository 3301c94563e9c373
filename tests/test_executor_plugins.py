"""Executors are plugins: a third party's executor (one file, loaded with --plugin) runs a real grid;
the hook's documented example is a working executor; unknown names are one clear line."""

from __future__ import annotations

import csv
import re
import textwrap

import pytest
from conftest import SMALL

#: 2 splits × 2 epochs of scratch on Dataset1: 2 stages, 2 results
# baselines run in the launching process, not on an executor: left out here
GRID = [*SMALL, "--strategies", "scratch", "--train", "dataset1", "--test", "dataset1", "--baselines",
        "none"]
COMPARED = ("backbone", "strategy", "train", "test", "split", "mape", "n_test", "epoch", "selection",
            "stage_key")


def _rows(path):
    with open(path, newline="") as fh:
        return sorted(tuple(r[c] for c in COMPARED) for r in csv.DictReader(fh))


@pytest.fixture(scope="module")
def inline_run(tmp_path_factory):
    from paraisite_bench.cli import main

    out = tmp_path_factory.mktemp("inline") / "run"
    main(["run", *GRID, "--out", str(out)])
    return out


def test_a_plugin_executor_runs_a_grid(inline_run, cli, tmp_path):
    import executor_plugin_for_tests as plugin

    plugin.RAN.clear()
    out = tmp_path / "thread"
    code, text, err = cli("run", *GRID, "--plugin", "executor_plugin_for_tests",
                          "--executor", "background-thread", "--out", str(out))
    assert code == 0, err
    assert "2 stages trained, 0 reused, 0 failed, 2 evaluations" in text
    rows = _rows(out / "results.csv")
    cells = sorted({r[:5] for r in rows})  # each stage read at its selected and at its last epoch
    assert cells == [("megnet", "scratch", "dataset1", "dataset1", "0"),
                     ("megnet", "scratch", "dataset1", "dataset1", "1")] and len(rows) == 4
    assert all(0 < float(r[5]) < 10 and int(r[6]) > 0 for r in rows)
    # the plugin's executor trained every stage, on its own thread; the results are the inline executor's
    assert sorted(key for key, _, _ in plugin.RAN) == sorted({r[-1] for r in rows})
    assert all(train and thread.startswith("background-thread") for _, train, thread in plugin.RAN)
    assert rows == _rows(inline_run / "results.csv")


def test_the_plugins_command_lists_the_executors(cli):
    code, out, _ = cli("plugins", "--plugin", "executor_plugin_for_tests")
    assert code == 0
    listed = out.split("executors:\n", 1)[1]
    for name, provider in (("inline", "executors"), ("local", "executors"), ("ray", "executors"),
                           ("background-thread", "executor_plugin_for_tests")):
        assert re.search(rf"^  {name} +\[{provider}\]", listed, re.M)  # width from the longest name


def test_an_unknown_executor_is_one_clear_line(cli, tmp_path):
    code, _, err = cli("run", *GRID, "--executor", "warp", "--out", str(tmp_path / "w"))
    assert code == 2
    assert err.strip() == ("error: unknown executor 'warp': known executors are inline, local, ray "
                           "(see `paraisite-bench plugins`)")
    assert not (tmp_path / "w").exists()


def test_the_hook_docstring_example_runs(inline_run, cli, tmp_path, monkeypatch):
    from paraisite_bench import hookspecs

    code = textwrap.dedent(hookspecs.register_executors.__doc__.split("Runnable example::", 1)[1])
    (tmp_path / "example_register_executors.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "r"
    code_, text, err = cli("run", *GRID, "--plugin", "example_register_executors", "--executor", "thread",
                           "--out", str(out))
    assert code_ == 0, err
    assert _rows(out / "results.csv") == _rows(inline_run / "results.csv")
