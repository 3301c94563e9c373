"""Errors sorted by who must act (a plugin's bug vs bad data), every failure visible (summary, failures.csv,
report, run.json plugin versions), and the small console items of issue 14."""

from __future__ import annotations

import csv
import json
import re

from conftest import SMALL

ONE = [*SMALL, "--splits", "1", "--epochs", "1", "--strategies", "scratch", "--train", "dataset1",
       "--test", "dataset1", "--plugin", "featurise_plugin_for_tests"]


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_featuriser_bug_is_a_plugin_failure_not_cached(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("PB_FEATURISER_FIXED", raising=False)
    code, out, err = cli("run", *ONE, "--backbones", "buggyfeat,megnet", "--out", str(tmp_path / "a"))
    assert code == 1, err
    text = out + err
    assert text.count("plugin featurise_plugin_for_tests failed on") == 1, text
    assert "RuntimeError: featuriser bug" in text
    assert "record skipped" not in text and "skipped.csv" not in text  # not blamed on the data
    assert "Traceback" not in text
    failures = _rows(tmp_path / "a" / "failures.csv")
    assert [r["backbone"] for r in failures] == ["buggyfeat"]  # megnet's job still ran
    assert "plugin featurise_plugin_for_tests failed to featurise" in failures[0]["error"]
    assert "1 stages trained" in out
    assert "buggyfeat" in (tmp_path / "a" / "report.html").read_text()
    # the plugin is "fixed": the same cache, a new run directory featurises again and succeeds
    monkeypatch.setenv("PB_FEATURISER_FIXED", "1")
    code, out, err = cli("run", *ONE, "--backbones", "buggyfeat", "--out", str(tmp_path / "b"))
    assert code == 0, out + err
    assert "0 failed" in out
    assert _rows(tmp_path / "b" / "failures.csv") == []


def test_featuriser_traceback_under_debug(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("PB_FEATURISER_FIXED", raising=False)
    monkeypatch.setenv("PARAISITE_BENCH_DEBUG", "1")
    code, out, err = cli("run", *ONE, "--backbones", "buggyfeat", "--out", str(tmp_path / "a"),
                         "--cache-dir", str(tmp_path / "cache"))
    assert code == 1
    assert "Traceback" in err and "featuriser bug" in err


def test_record_error_is_still_a_skipped_record(cli, tmp_path, monkeypatch):
    rid = "mp-23231"  # a Dataset1 record
    monkeypatch.setenv("PB_REJECT_RECORD", rid)
    code, out, err = cli("run", *ONE, "--backbones", "pickyfeat", "--out", str(tmp_path / "a"))
    assert code == 0, out + err
    skipped = _rows(tmp_path / "a" / "skipped.csv")
    assert [r["id"] for r in skipped] == [rid]
    assert "failed on" not in out + err


def test_twelve_failures_listed_five_and_seven_more(cli, tmp_path):
    out_dir = tmp_path / "r"
    code, out, err = cli("run", *ONE, "--splits", "12", "--backbones", "neverbuilds-longname",
                         "--out", str(out_dir))
    assert code == 1
    assert out.count("FAILED neverbuilds-longname") == 5, out
    assert "and 7 more — see" in out and "failures.csv" in out
    assert "12 failed" in out
    rows = _rows(out_dir / "failures.csv")
    assert len(rows) == 12
    assert {r["backbone"] for r in rows} == {"neverbuilds-longname"}
    assert sorted(int(r["split"]) for r in rows) == list(range(12))
    assert all("always fails to build" in r["error"] for r in rows)
    report = (out_dir / "report.html").read_text()
    assert "12 stage(s) failed" in report and "12 planned result(s) missing" in report
    assert "0 of 12 planned results present, 12 missing" in out
    info = json.loads((out_dir / "run.json").read_text())
    plugins = info["plugins"]
    assert plugins["megnet"]["distribution"] == "paraisite-bench" and plugins["megnet"]["version"]
    assert plugins["featurise_plugin_for_tests"]["distribution"].startswith("none")
    assert "featurise_plugin_for_tests" in report and "paraisite-bench" in report


def test_long_names_keep_the_plugins_listing_aligned(cli):
    code, out, err = cli("plugins", "--plugin", "featurise_plugin_for_tests")
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("  ") and "[" in line]
    starts = {line.index("[") for line in lines}
    assert len(starts) == 1, lines  # every provider column starts at the same place
    assert re.search(r"^  neverbuilds-longname +\[featurise_plugin_for_tests\]", out, re.M)


def test_misspelled_hook_argument_is_one_line(cli):
    code, out, err = cli("plugins", "--plugin", "misspelled_plugin_for_tests")
    assert code == 0
    line = next(line for line in out.splitlines() if line.strip().startswith("misspelled_plugin_for_tests:"))
    assert "hook register_backbones" in line and "'regster'" in line and "takes (register)" in line
    assert "<module" not in out


def test_selection_help_has_no_literal_percent_escape(cli):
    code, out, _ = cli("run", "--help")
    assert code == 0
    assert "%%" not in out and "20 percent" in out


def test_missing_plugin_module_stops_with_one_line(cli, tmp_path):
    code, out, err = cli("plugins", "--plugin", "no_such_module_14")
    assert code == 2 and "--plugin 'no_such_module_14' cannot be imported" in err


def test_summary_failures_csv_and_report_agree_with_skipped_dependents(cli, tmp_path):
    """A failed first stage of `double` skips its second: both count as failed, everywhere."""
    out_dir = tmp_path / "r"
    args = [a for a in ONE if a not in ("scratch",)]
    args[args.index("--strategies") + 1:args.index("--strategies") + 1] = ["double"]
    code, out, err = cli("run", *args, "--backbones", "neverbuilds-longname", "--out", str(out_dir))
    assert code == 1, out + err
    rows = _rows(out_dir / "failures.csv")
    assert "2 failed" in out and len(rows) == 2, out
    assert any(r["error"] == "skipped: its previous stage failed" for r in rows)
    assert "2 stage(s) failed" in (out_dir / "report.html").read_text()


def test_summary_table_columns_fit_long_names(capsys, tmp_path):
    from types import SimpleNamespace

    from paraisite_bench.cli import _summary
    from paraisite_bench.runner import RunOutcome

    long = "dataset1-cubic0.78"
    row = {"backbone": "megnet", "strategy": "scratch", "selection": "paper", "train": long, "test": long,
           "mape_mean": 0.5, "mape_std": 0.1, "mean": 0.5, "std": 0.1, "metric": "mape", "paper_mean": ""}
    result = SimpleNamespace(table=[row], rows=[], missing=[])
    info = {"test": [long, "dataset1"], "train": [long], "strategies": ["scratch"]}
    _summary(tmp_path, RunOutcome(), result, [], None, info)
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if "train \\ test" in line)
    body = next(line for line in lines if line.strip().startswith(long))
    # the cell of the long test column starts where its header does, after the long train name
    assert header.index(long) == body.index("0.50") and header.index(long) > 4 + len(long)
    assert f"{long} " in header and header.index("dataset1 ") > header.index(long) + len(long)
