"""Bad input: one clear line naming the thing and what to do, never a traceback, nothing lost."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import SMALL

ONE_JOB = ["--strategies", "scratch", "--splits", "1", "--epochs", "1", "--baselines", "none"]


def _selected(path):
    """The trained models' results.csv rows read at the selected epoch (each stage is also read at its last
    epoch; the baselines have rows of their own)."""
    rows = csv.DictReader(open(path))
    return [r for r in rows if r["selection"] == "paper" and r["backbone"] != "baseline"]


def _one_clear_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("option, value, expected", [
    ("--backbones", "megnet,nope", "unknown backbone 'nope': known backbones are"),
    ("--strategies", "sideways", "unknown strategy 'sideways'"),
    ("--train", "dataset9", "unknown dataset 'dataset9'"),
    ("--test", "DATASET1,mixx", "unknown dataset 'mixx'"),
    ("--subsample", "aflw=10", "unknown dataset 'aflw'"),
    ("--subsample", "aflow=ten", "expected NAME=INTEGER"),
    ("--head", "350,wide", "expected comma-separated widths"),
    ("--plugin", "no_such_plugin_module", "--plugin 'no_such_plugin_module' cannot be imported"),
    ("--selection", "sideways", "Invalid value for '--selection'"),
])
def test_unknown_names_and_bad_options(cli, tmp_path, option, value, expected):
    code, _, err = cli("run", *SMALL, option, value, "--out", str(tmp_path / "r"))
    assert code == 2
    assert expected in _one_clear_line(err)


def test_no_data_root(cli, monkeypatch, tmp_path):
    monkeypatch.delenv("PARAISITE_BENCH_DATA")
    code, _, err = cli("run", *SMALL, "--out", str(tmp_path / "r"))
    assert code == 2 and "no data root: pass --data-dir" in _one_clear_line(err)


def test_missing_and_wrong_data_root(cli, tmp_path):
    code, _, err = cli("run", *SMALL, "--data-dir", str(tmp_path / "absent"), "--out", str(tmp_path / "r"))
    assert code == 2 and "does not exist" in _one_clear_line(err)
    code, _, err = cli("run", *SMALL, "--data-dir", str(tmp_path), "--out", str(tmp_path / "r"))
    assert code == 2 and "ltc/dataset1.json.gz" in _one_clear_line(err)


def test_unwritable_run_directory(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = cli("run", *SMALL, "--out", str(blocker / "sub"))
    assert code == 2 and "cannot write to run directory" in _one_clear_line(err)


def _good_records(data_dir, n=24):
    doc = json.load(gzip.open(data_dir / "ltc" / "dataset1.json.gz"))
    return doc["records"][:n]


def _write(tmp_path, records):
    path = tmp_path / "user.json"
    path.write_text(json.dumps({"name": "userfile", "records": records}))
    return path


def test_bad_records_are_skipped_and_reported(cli, tmp_path, data_dir, monkeypatch):
    good = _good_records(data_dir)
    nacl_cif = good[0]["cif"]
    bad = [
        {"id": "broken-cif", "formula": "X", "kappa": 1.0, "cif": _broken_cif(data_dir)},
        {"id": "polonium", "formula": "PoBr", "kappa": 1.0, "cif": nacl_cif.replace("Ag", "Po")},
        {"id": "zero", "formula": "AgBr", "kappa": 0.0, "cif": nacl_cif},
        {"id": "negative", "formula": "AgBr", "kappa": -3.0, "cif": nacl_cif},
        {"id": "nan", "formula": "AgBr", "kappa": float("nan"), "cif": nacl_cif},
        {"id": "text", "formula": "AgBr", "kappa": "high", "cif": nacl_cif},
        {"id": good[1]["id"], "formula": "AgBr", "kappa": 2.0, "cif": nacl_cif},  # duplicate id
        {"id": "no-cif", "formula": "AgBr", "kappa": 2.0},
    ]
    monkeypatch.setenv("PB_TEST_DATASET", str(_write(tmp_path, good + bad)))
    out = tmp_path / "run"
    code, stdout, err = cli("run", *SMALL, *ONE_JOB, "--plugin", "plugins_for_tests", "--train", "userfile",
                            "--test", "userfile", "--out", str(out))
    assert code == 0, err
    assert "Traceback" not in err
    skipped = {r["id"]: r["problem"] for r in csv.DictReader(open(out / "skipped.csv"))}
    assert set(skipped) == {"broken-cif", "polonium", "zero", "negative", "nan", "text", good[1]["id"],
                            "no-cif"}
    assert "CIF does not parse" in skipped["broken-cif"]
    assert "Po not in MEGNet" in skipped["polonium"]
    assert "≤ 0" in skipped["zero"] and "≤ 0" in skipped["negative"]
    assert "nan" in skipped["nan"] and "not a number" in skipped["text"]
    assert "duplicate id" in skipped[good[1]["id"]]
    assert "8 record(s) skipped" in stdout
    # the split is made on the 27 records with a valid κ and id; the test part then loses the
    # records that cannot be featurised (broken CIF, Po, no CIF)
    import plugins_for_tests

    from paraisite_bench.context import Context
    from paraisite_bench.plugins import load_registry
    from paraisite_bench.protocol import Protocol

    ctx = Context(load_registry([plugins_for_tests]), data_dir, Protocol(), tmp_path / "c")
    test_ids = ctx.split("userfile", 0, Protocol().training_options("userfile")).test
    assert len(ctx.dataset("userfile").records) == 27 and len(test_ids) == 5
    expected = len([i for i in test_ids if i not in {"broken-cif", "polonium", "no-cif"}])
    rows = _selected(out / "results.csv")
    assert len(rows) == 1 and int(rows[0]["n_test"]) == expected


def test_empty_dataset(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PB_TEST_DATASET", str(_write(tmp_path, [])))
    code, _, err = cli("run", *SMALL, *ONE_JOB, "--plugin", "plugins_for_tests", "--train", "userfile",
                       "--test", "userfile", "--out", str(tmp_path / "r"))
    assert code == 2 and "dataset 'userfile' has no valid records" in _one_clear_line(err)


def test_a_failed_command_loses_nothing_stored(cli, tmp_path):
    out = tmp_path / "run"
    args = ["run", *SMALL, *ONE_JOB, "--train", "dataset1", "--test", "dataset1", "--out", str(out)]
    assert cli(*args)[0] == 0
    before = (out / "results.csv").read_text()
    code, _, err = cli("run", *SMALL, *ONE_JOB, "--backbones", "megnet,bogus", "--out", str(out))
    assert code == 2
    assert (out / "results.csv").read_text() == before
    assert sqlite3.connect(out / "store.sqlite").execute("SELECT count(*) FROM stages").fetchone()[0] == 1
    assert "0 stages trained, 1 reused" in cli(*args)[1]


# ---- the table: ≥ 20 malformed inputs, each one clear line, a documented exit status, nothing lost ------

TINY = ["--preset", "quick", "--strategies", "scratch", "--train", "dataset1", "--test", "dataset1",
        "--splits", "1", "--epochs", "1", "--subsample", "dataset1=20", "--no-progress"]
#: a run on the user's file "user.*" (15 good Dataset1 records + the malformed one)
ON_USER = ["--preset", "quick", "--strategies", "scratch", "--train", "user", "--test", "user",
           "--splits", "1", "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory, data_dir, cache_dir):
    """A run directory with results in it, copied for every malformed call."""
    import os

    from paraisite_bench.cli import main

    out = tmp_path_factory.mktemp("stored") / "run"
    os.environ["PARAISITE_BENCH_DATA"] = str(data_dir)
    os.environ["PARAISITE_BENCH_CACHE"] = str(cache_dir)
    main(["run", *TINY, "--out", str(out)])
    return out


def _stored(out: Path) -> dict:
    con = sqlite3.connect(out / "store.sqlite")
    stages = dict(con.execute("SELECT key, checksum FROM stages WHERE status='done'").fetchall())
    evals = con.execute("SELECT stage_key, test, value FROM evals").fetchall()
    con.close()
    return {"stages": stages, "evals": set(evals),
            "checkpoints": {k: (out / "checkpoints" / f"{k}.pt").read_bytes() for k in stages}}


def _structure_cif(species, a, lattice_kind="Fm-3m"):
    from pymatgen.core import Lattice, Structure

    s = Structure.from_spacegroup(lattice_kind, Lattice.cubic(a), species, [[0, 0, 0], [.5, .5, .5]])
    return s.to(fmt="cif")


def _empty_cell_cif():
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice.cubic(4.0), [], []).to(fmt="cif")


def _user_json(d: Path, data_dir: Path, bad: dict | None, name="user.json", n_good=15) -> str:
    good = [{"id": r["id"], "kappa": r["kappa"], "cif": r["cif"]} for r in _good_records(data_dir, n_good)]
    path = d / name
    path.write_text(json.dumps(good + ([bad] if bad else [])))
    return str(path)


def _user_csv(d: Path, data_dir: Path, header: str, bad_row: str | None, name="user.csv") -> str:
    (d / "cifs").mkdir(exist_ok=True)
    lines = [header]
    for r in _good_records(data_dir, 15):
        (d / "cifs" / f"{r['id']}.cif").write_text(r["cif"])
        lines.append(f"{r['id']},{r['kappa']},cifs/{r['id']}.cif")
    if bad_row is not None:
        lines.append(bad_row)
    path = d / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _broken_cif(data_dir):
    """A real CIF whose atom coordinates are not numbers."""
    lines = _good_records(data_dir, 1)[0]["cif"].splitlines()
    return "\n".join(line.replace("0.5", "zero.five") if line.startswith("  ") else line for line in lines)


def _disordered_cif():
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.6), [{"Na": 0.5, "K": 0.5}, "Cl"],
                                     [[0, 0, 0], [.5, .5, .5]]).to(fmt="cif")


def _folder_without_csv(d: Path, data_dir: Path) -> str:
    (d / "cifs").mkdir()
    for r in _good_records(data_dir, 3):
        (d / "cifs" / f"{r['id']}.cif").write_text(r["cif"])
    return str(d / "cifs")


def _file(d: Path, name: str, text: str) -> str:
    (d / name).write_text(text)
    return str(d / name)


# (case id, builder(d, data_dir) -> extra CLI args, exit status, what the one line says).
# Exit 2: the command is refused, nothing runs. Exit 0 with a record: that record is skipped, the run
# goes on, and the summary's line for it (and skipped.csv) says which record and what is wrong.
FATAL = [
    ("unknown-backbone", lambda d, dd: ["run", *TINY, "--backbones", "megnet,nope"],
     "unknown backbone 'nope': known backbones are"),
    ("unknown-strategy", lambda d, dd: ["run", *TINY, "--strategies", "sideways"],
     "unknown strategy 'sideways'"),
    ("unknown-train", lambda d, dd: ["run", *TINY, "--train", "dataset9"], "unknown dataset 'dataset9'"),
    ("unknown-test", lambda d, dd: ["run", *TINY, "--test", "DATASET1,mixx"], "unknown dataset 'mixx'"),
    ("unknown-subsample-name", lambda d, dd: ["run", *TINY, "--subsample", "aflw=10"],
     "unknown dataset 'aflw'"),
    ("unknown-stage-epochs-name", lambda d, dd: ["run", *TINY, "--stage-epochs", "aflw=3"],
     "unknown dataset 'aflw'"),
    ("unknown-preset", lambda d, dd: ["run", *TINY, "--preset", "quik"], "Invalid value for '--preset'"),
    ("unknown-selection", lambda d, dd: ["run", *TINY, "--selection", "sideways"],
     "Invalid value for '--selection'"),
    ("unknown-scaler-fit", lambda d, dd: ["run", *TINY, "--scaler-fit", "some"],
     "Invalid value for '--scaler-fit'"),
    ("unknown-plugin-run", lambda d, dd: ["run", *TINY, "--plugin", "no_such_module"],
     "--plugin 'no_such_module' cannot be imported"),
    ("unknown-plugin-plugins", lambda d, dd: ["plugins", "--plugin", "no_such_module"],
     "--plugin 'no_such_module' cannot be imported"),
    ("unknown-command-option", lambda d, dd: ["run", *TINY, "--epoch", "3"],
     "No such option '--epoch'. (Did you mean one of: '--epochs'"),
    ("not-a-number", lambda d, dd: ["run", *TINY, "--subsample", "aflow=ten"], "expected NAME=INTEGER"),
    ("bad-head", lambda d, dd: ["run", *TINY, "--head", "350,wide"], "expected comma-separated widths"),
    ("empty-name-list", lambda d, dd: ["run", *TINY, "--train", ","], "empty list of names"),
    ("missing-data-root", lambda d, dd: ["run", *TINY, "--data-dir", str(d / "absent")], "does not exist"),
    ("unwritable-out", lambda d, dd: ["run", *TINY, "--out", _file(d, "a-file", "") + "/sub"],
     "cannot write to run directory"),
    ("report-not-a-run", lambda d, dd: ["report", str(d)], "is not a run directory (no run.json)"),
    ("dataset-file-missing", lambda d, dd: ["run", *ON_USER, "--dataset-file", str(d / "user.csv")],
     "user.csv: no such file or folder"),
    ("dataset-file-empty", lambda d, dd: ["run", *ON_USER, "--dataset-file", _file(d, "user.csv", "")],
     "user.csv: the file is empty"),
    ("dataset-file-header-only", lambda d, dd: ["run", *ON_USER, "--dataset-file",
                                                _file(d, "user.csv", "id,kappa,cif\n")],
     "user.csv: no records below the header"),
    ("dataset-file-wrong-column", lambda d, dd: ["run", *ON_USER, "--dataset-file",
                                                 _user_csv(d, dd, "id,kapa,cif", None)],
     "user.csv: no 'kappa' column (columns: id, kapa, cif)"),
    ("dataset-file-no-cif-or-formula", lambda d, dd: ["run", *ON_USER, "--dataset-file",
                                                      _file(d, "user.csv", "id,kappa,structure\na,1,x\n")],
     "user.csv: neither a 'cif' nor a 'formula' column"),
    ("dataset-file-broken-json", lambda d, dd: ["run", *ON_USER, "--dataset-file",
                                                _file(d, "user.json", '[{"id": "a", "kappa": 1,')],
     "user.json: cannot read as JSON"),
    ("dataset-file-json-not-records", lambda d, dd: ["run", *ON_USER, "--dataset-file",
                                                     _file(d, "user.json", '[1, 2]')],
     "user.json: record #1 is int, not an object"),
    ("dataset-file-json-empty-list", lambda d, dd: ["run", *ON_USER, "--dataset-file",
                                                    _file(d, "user.json", '{"records": []}')],
     "user.json: the list of records is empty"),
    ("dataset-file-unknown-format", lambda d, dd: ["run", *ON_USER, "--dataset-file",
                                                   _file(d, "user.txt", "x")],
     "user.txt: unknown format .txt"),
    ("dataset-file-folder-without-csv", lambda d, dd: ["run", *ON_USER, "--dataset-file",
                                                       "user=" + _folder_without_csv(d, dd)],
     "a folder must hold *.cif files and exactly one CSV"),
    ("dataset-file-name-clash", lambda d, dd: ["run", *ON_USER, "--dataset-file",
                                               _user_json(d, dd, None, "dataset1.json")],
     "dataset name 'dataset1' is already provided by plugin 'ltc'"),
    ("dataset-file-bad-name", lambda d, dd: ["run", *ON_USER, "--dataset-file",
                                             "my data=" + _user_json(d, dd, None)],
     "'my data' is not a usable dataset name"),
    ("dataset-file-formula-only", lambda d, dd: ["run", *ON_USER, "--dataset-file",
                                                 _file(d, "user.csv",
                                                       "id,formula,kappa\na,NaCl,6.5\nb,KCl,7\n")],
     "no record has a CIF, so structure backbone 'megnet' cannot use it"),
    ("dataset-file-every-kappa-bad", lambda d, dd: ["run", *ON_USER, "--dataset-file",
                                                    _file(d, "user.json", json.dumps(
                                                        [{"id": "a", "kappa": 0,
                                                          "cif": _structure_cif(["Na", "Cl"], 5.6)},
                                                         {"id": "b", "kappa": -1,
                                                          "cif": _structure_cif(["K", "Cl"], 6.3)}]))],
     "dataset 'user' has no valid records (2 rejected)"),
]

RECORD = [
    ("broken-cif", lambda d, dd: _user_json(d, dd, {"id": "bad", "kappa": 1.0, "cif": _broken_cif(dd)}),
     "CIF does not parse (Invalid CIF file with no structures!)"),
    ("truncated-cif", lambda d, dd: _user_json(d, dd, {"id": "bad", "kappa": 1.0,
                                                        "cif": _good_records(dd, 1)[0]["cif"][:300]}),
     "CIF has no atoms"),
    ("not-a-cif", lambda d, dd: _user_json(d, dd, {"id": "bad", "kappa": 1.0,
                                                    "cif": "data_x\n_cell_length_a 3\nnonsense"}),
     "CIF has no atoms"),
    ("zero-atoms", lambda d, dd: _user_json(d, dd, {"id": "bad", "kappa": 1.0, "cif": _empty_cell_cif()}),
     "CIF has no atoms"),
    ("disordered", lambda d, dd: _user_json(d, dd, {"id": "bad", "kappa": 1.0, "cif": _disordered_cif()}),
     "structure is disordered (partial occupancies)"),
    ("element-outside-the-backbone", lambda d, dd: _user_json(d, dd, {
        "id": "bad", "kappa": 1.0, "cif": _structure_cif(["Po", "Cl"], 6.0)}),
     "element(s) Po not in MEGNet's 89-element embedding"),
    ("absurd-lattice-huge", lambda d, dd: _user_json(d, dd, {"id": "bad", "kappa": 1.0,
                                                              "cif": _structure_cif(["Na", "Cl"], 500.0)}),
     "absurd cell volume"),
    ("absurd-lattice-tiny", lambda d, dd: _user_json(d, dd, {"id": "bad", "kappa": 1.0,
                                                              "cif": _structure_cif(["Na", "Cl"], 0.3)}),
     "absurd cell volume"),
    ("kappa-zero", lambda d, dd: _user_json(d, dd, {"id": "bad", "kappa": 0,
                                                     "cif": _structure_cif(["Na", "Cl"], 5.6)}),
     "kappa 0.0 ≤ 0"),
    ("kappa-negative", lambda d, dd: _user_json(d, dd, {"id": "bad", "kappa": -2.5,
                                                         "cif": _structure_cif(["Na", "Cl"], 5.6)}),
     "kappa -2.5 ≤ 0"),
    ("kappa-nan", lambda d, dd: _user_json(d, dd, {"id": "bad", "kappa": float("nan"),
                                                    "cif": _structure_cif(["Na", "Cl"], 5.6)}),
     "kappa is nan"),
    ("kappa-inf", lambda d, dd: _user_csv(d, dd, "id,kappa,cif",
                                          "bad,inf,cifs/" + _good_records(dd, 1)[0]["id"] + ".cif"),
     "kappa is inf"),
    ("kappa-string", lambda d, dd: _user_csv(d, dd, "id,kappa,cif", "bad,high,cifs/x.cif"),
     "kappa 'high' is not a number"),
    ("kappa-empty-cell", lambda d, dd: _user_csv(d, dd, "id,kappa,cif", "bad,,cifs/x.cif"),
     "kappa '' is not a number"),
    ("duplicate-id", lambda d, dd: _user_csv(d, dd, "id,kappa,cif",
                                             _good_records(dd, 1)[0]["id"] + ",3.0,cifs/"
                                             + _good_records(dd, 1)[0]["id"] + ".cif"),
     "duplicate id"),
    ("cif-path-missing", lambda d, dd: _user_csv(d, dd, "id,kappa,cif", "bad,3.0,cifs/nowhere.cif"),
     "nowhere.cif cannot be read (No such file or directory)"),
    ("formula-only-record", lambda d, dd: _user_csv(d, dd, "id,kappa,cif,formula", "bad,3.0,,NaCl"),
     "has no crystal structure (CIF)"),
]


@pytest.mark.parametrize("case, build, expected", FATAL, ids=[c[0] for c in FATAL])
def test_malformed_input_is_refused_with_one_line(case, build, expected, cli, stored_run, tmp_path, data_dir):
    out = tmp_path / "run"
    shutil.copytree(stored_run, out)
    before = _stored(out)
    outputs = {n: (out / n).read_bytes() for n in ("results.csv", "table1.csv", "run.json")}
    args = build(tmp_path, data_dir)
    if args[0] == "run" and "--out" not in args:
        args += ["--out", str(out)]
    code, stdout, err = cli(*args)
    assert code == 2, (stdout, err)
    assert expected in _one_clear_line(err)
    assert _stored(out) == before
    assert {n: (out / n).read_bytes() for n in outputs} == outputs


@pytest.mark.parametrize("case, build, expected", RECORD, ids=[c[0] for c in RECORD])
def test_a_malformed_record_is_skipped_with_one_line(case, build, expected, cli, stored_run, tmp_path,
                                                     data_dir):
    out = tmp_path / "run"
    shutil.copytree(stored_run, out)
    before = _stored(out)
    path = build(tmp_path, data_dir)
    code, stdout, err = cli("run", *ON_USER, "--dataset-file", path, "--out", str(out))
    assert code == 0, err
    assert "Traceback" not in err
    bad_id = _good_records(data_dir, 1)[0]["id"] if case == "duplicate-id" else "bad"
    lines = [line.strip() for line in stdout.splitlines()
             if line.strip().startswith(f"user: record {bad_id!r}: ")]
    # what is wrong — what to do
    assert len(lines) == 1 and expected in lines[0] and " — " in lines[0], stdout
    assert "1 record(s) skipped" in stdout
    skipped = list(csv.DictReader(open(out / "skipped.csv")))
    assert [(s["dataset"], s["id"]) for s in skipped] == [("user", bad_id)]
    assert expected in skipped[0]["problem"] and skipped[0]["hint"]
    after = _stored(out)  # the earlier results are still there, untouched
    assert all(after["stages"][k] == v for k, v in before["stages"].items())
    assert before["evals"] <= after["evals"]
    assert all(after["checkpoints"][k] == v for k, v in before["checkpoints"].items())
    rows = _selected(out / "results.csv")
    # the user's records are Dataset1's: they take Dataset1's side of the split (issue 12), so few are tested
    assert len(rows) == 1 and rows[0]["train"] == "user" and int(rows[0]["n_test"]) >= 1
