"""Plugin discovery through the entry-point group, and a strategy added by an outside module."""

from __future__ import annotations

import re

import plugins_for_tests
import pytest
from conftest import SMALL, model_rows

from paraisite_bench.plugins import load_registry


def test_builtins_come_from_the_entry_point_group():
    reg = load_registry()
    assert reg.providers[("backbone", "megnet")] == "megnet"
    assert {n for (k, n) in reg.providers if k == "dataset"} >= {"dataset1", "dataset2", "mix", "aflow"}
    assert {reg.providers[("strategy", s)] for s in ("scratch", "pretrained", "double")} == {"strategies"}
    assert reg.broken == []
    # without entry points, nothing is built in: the core knows no backbone or dataset
    bare = load_registry(entry_points=False)
    assert not bare.backbones and not bare.datasets and not bare.strategies


def test_plugins_command_lists_everything_with_its_plugin(cli):
    code, out, _ = cli("plugins", "--plugin", "plugins_for_tests")
    assert code == 0
    assert re.search(r"^  megnet +\[megnet\]", out, re.M)  # width from the longest name
    assert re.search(r"^  dataset1 +\[ltc\]", out, re.M)  # width from the longest name
    assert re.search(r"^  double +\[strategies\]", out, re.M)  # width from the longest name
    assert re.search(r"^  double-d2 +\[plugins_for_tests\]", out, re.M)  # width from the longest name


def test_core_never_imports_matgl():
    import ast
    from pathlib import Path

    import paraisite_bench

    for path in Path(paraisite_bench.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n.split(".")[0] in {"matgl", "crabnet"}], path


def test_a_plugin_strategy_runs_without_core_changes(cli, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = cli("run", *SMALL, "--plugin", "plugins_for_tests", "--strategies", "DOUBLE-D2",
                            "--train", "dataset1", "--test", "dataset1", "--splits", "1", "--out", str(out))
    assert code == 0, err
    rows = model_rows(out / "results.csv")
    assert [r["chain"] for r in rows] == ["weights:eform>dataset2>dataset1"]
    assert rows[0]["weights_loaded"] == "106/106"
    assert plugins_for_tests.register_strategies  # the module really was the provider


def test_a_broken_plugin_is_listed_not_fatal(cli):
    code, out, _ = cli("plugins", "--plugin", "broken_plugin_for_tests")
    assert code == 0
    assert re.search(r"^  megnet +\[megnet\]", out, re.M)  # width from the longest name
    assert ("broken plugins:\n"
            "  broken_plugin_for_tests: register_backbones: ImportError: needs a library") in out


def test_a_failing_backbone_does_not_stop_the_grid(cli, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = cli("run", *SMALL, "--plugin", "plugins_for_tests", "--backbones", "megnet,failing",
                            "--strategies", "scratch", "--train", "dataset1", "--test", "dataset1",
                            "--splits", "1", "--out", str(out))
    assert code == 1
    assert "FAILED failing:random>dataset1#0: RuntimeError: this backbone always fails to build" in stdout
    rows = model_rows(out / "results.csv")
    assert [r["backbone"] for r in rows] == ["megnet"]


def _docstring_examples():
    import textwrap

    from paraisite_bench import hookspecs

    for name in ("register_backbones", "register_datasets", "register_strategies"):
        doc = getattr(hookspecs, name).__doc__
        yield name, textwrap.dedent(doc.split("Runnable example::", 1)[1])


@pytest.mark.parametrize("hook, code", list(_docstring_examples()))
def test_hook_docstring_examples_run(hook, code, tmp_path, monkeypatch, cli):
    """Each hook's documented example is a working plugin: loaded like a third party's module."""
    (tmp_path / f"example_{hook}.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = {"register_backbones": ["--backbones", "meanmass", "--strategies", "scratch",
                                   "--train", "dataset1", "--test", "dataset1"],
            "register_datasets": ["--strategies", "scratch", "--train", "d1-halides", "--test", "d1-halides"],
            "register_strategies": ["--strategies", "double-mix", "--train", "dataset1",
                                    "--test", "dataset1"]}[hook]
    code_, out, err = cli("run", *SMALL, "--plugin", f"example_{hook}", *args, "--splits", "1",
                          "--out", str(tmp_path / "r"))
    assert code_ == 0, err
    rows = model_rows(tmp_path / "r" / "results.csv")
    assert len(rows) == 1 and float(rows[0]["mape"]) > 0
