"""Open a report in headless Debian Chromium (driven by Playwright, never a downloaded browser), check its
Table I against results.csv, record every request, and take a screenshot.

Also a command for the committed reports::

    python tests/report_browser.py reports/quick/report.html reports/quick/report.png
"""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
import sys
import tempfile
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = os.environ.get("PARAISITE_BENCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAPER_CSV = Path(__file__).resolve().parents[2] / "shared" / "reference" / "paper_table1.csv"


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is missing (pip install -e '.[test]')"
    return None


@contextmanager
def chromium():
    """A headless system Chromium with a fresh user-data dir; yields (context, requests) where requests
    collects the URL of every request any page makes."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="pb-chromium-")
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                        args=CHROMIUM_ARGS,
                                                        viewport={"width": 1440, "height": 900})
            requests: list[str] = []
            ctx.on("request", lambda r: requests.append(r.url))
            # recorded above, then refused: a report that fetches something fails fast instead of hanging
            ctx.route(re.compile(r"^(https?|wss?|ftp)://"), lambda route: route.abort())
            try:
                yield ctx, requests
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def open_report(ctx, path: Path):
    page = ctx.new_page()
    page.goto(Path(path).resolve().as_uri(), wait_until="load")
    return page


def outside_requests(requests: list[str], path: Path) -> list[str]:
    """Requests other than the report file itself and data: URIs."""
    own = Path(path).resolve().as_uri()
    return [u for u in requests if u != own and not u.startswith("data:")]


def read_paper(path: Path = PAPER_CSV) -> dict[tuple[str, str, str], tuple[float, float]]:
    with open(path, newline="") as fh:
        return {(r["strategy"], r["train"].lower(), r["test"].lower()):
                (float(r["mape_mean"]), float(r["mape_std"]))
                for r in csv.DictReader(fh)}


def expected_cells(results_csv: Path, paper: dict) -> dict[tuple, dict]:
    """(backbone, selection, strategy, train, test) -> mean, sample std, paper delta and outside mark,
    computed here from results.csv (independently of the package's aggregation)."""
    from scipy import stats

    from paraisite_bench.reference.annotations import like_for_like, notes_for

    groups, leaks = defaultdict(list), defaultdict(list)
    with open(results_csv, newline="") as fh:
        for r in csv.DictReader(fh):
            key = (r["backbone"], r["selection"], r["strategy"], r["train"], r["test"])
            groups[key].append(float(r["mape"]))
            if r.get("leak_formula"):
                leaks[key].append(float(r["leak_formula"]))
    out = {}
    for key, vals in groups.items():
        n = len(vals)
        mean = sum(vals) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
        ci = stats.t.interval(0.95, n - 1, loc=mean, scale=std / math.sqrt(n)) if n > 1 else None
        p = paper.get(key[2:]) if key[0] != "baseline" else None
        like = bool(p) and like_for_like(*key[2:])
        out[key] = {"mean": mean, "std": std, "n": n, "paper": p, "ci": ci,
                    "notes": notes_for(*key[2:]) if p else [],
                    "leak": sum(leaks[key]) / len(leaks[key]) if leaks[key] else None,
                    "delta": mean - p[0] if p else None, "outside": bool(like and abs(mean - p[0]) > p[1])}
    return out


_READ_CELLS = """() => Array.from(document.querySelectorAll('table.table1 td[data-strategy]')).map(td => ({
  backbone: td.dataset.baseline ? 'baseline' : td.closest('table').dataset.backbone,
  selection: td.closest('table').dataset.selection,
  ci: (td.querySelector('.ci') || {}).textContent || null,
  notes: Array.from(td.querySelectorAll('sup.pnote')).map(s => s.dataset.note),
  leak: td.querySelector('.leak') ? parseFloat(td.querySelector('.leak').dataset.leakFormula) : null,
  strategy: td.dataset.strategy, train: td.dataset.train, test: td.dataset.test,
  empty: td.classList.contains('empty'), outside: td.classList.contains('outside'),
  ours: (td.querySelector('.ours') || {}).textContent || null,
  paper: (td.querySelector('.paper-value') || {}).textContent || null,
  delta: (td.querySelector('.delta') || {}).textContent || null,
  visible: td.getBoundingClientRect().width > 0 }))"""


def check_table1(page, expected: dict[tuple, dict]) -> list[str]:
    """Compare Table I in the rendered DOM with ``expected``; return the mismatches (empty when right).
    Numbers are shown with 2 decimals, so each must lie within half a unit of the last place."""
    cells = page.evaluate(_READ_CELLS)
    seen = {}
    for c in cells:
        seen[(c["backbone"], c["selection"], c["strategy"], c["train"], c["test"])] = c
    problems = []

    def close(text, value):
        try:
            return abs(float(text) - value) <= 0.005 + 1e-9
        except (TypeError, ValueError):
            return False

    for key, exp in sorted(expected.items()):
        c = seen.get(key)
        if c is None or c["empty"] or not c["ours"] or not c["visible"]:
            problems.append(f"{key}: no visible cell in Table I")
            continue
        mean_txt, _, std_txt = c["ours"].strip().partition(" (")
        if not (close(mean_txt, exp["mean"]) and close(std_txt.rstrip(")"), exp["std"])):
            problems.append(f"{key}: shows {c['ours']!r}, expected {exp['mean']:.4f} ({exp['std']:.4f})")
        problems += _check_extras(key, c, exp, close)
        if exp["paper"]:
            if not (c["paper"] and close(c["paper"].split(" (")[0], exp["paper"][0])):
                problems.append(f"{key}: paper shows {c['paper']!r}, expected {exp['paper'][0]:.2f}")
            if not close(c["delta"], exp["delta"]):
                problems.append(f"{key}: delta shows {c['delta']!r}, expected {exp['delta']:+.4f}")
            if c["outside"] != exp["outside"]:
                problems.append(f"{key}: outside mark {c['outside']}, expected {exp['outside']}")
        elif c["paper"] is not None:
            problems.append(f"{key}: paper value {c['paper']!r} where the paper has none")
    extra = [k for k, c in seen.items() if not c["empty"] and k not in expected]
    problems += [f"{k}: cell shown but not in results.csv" for k in extra]
    return problems


def _check_extras(key, c: dict, exp: dict, close) -> list[str]:
    """The 95 % interval under a cell, the paper's note markers and the leakage marker."""
    problems = []
    if exp["ci"]:
        low, _, high = (c["ci"] or "").strip("[] ").partition(", ")
        if not (close(low, exp["ci"][0]) and close(high, exp["ci"][1])):
            problems.append(f"{key}: interval shows {c['ci']!r}, "
                            f"expected [{exp['ci'][0]:.3f}, {exp['ci'][1]:.3f}]")
    if c["notes"] != exp["notes"]:
        problems.append(f"{key}: paper notes {c['notes']}, expected {exp['notes']}")
    shown = c["leak"] if c["leak"] is not None else 0.0
    if exp["leak"] is not None and abs(shown - exp["leak"]) > 1e-6:
        problems.append(f"{key}: leakage marker {c['leak']}, expected {exp['leak']}")
    return problems


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python tests/report_browser.py REPORT.html SCREENSHOT.png", file=sys.stderr)
        return 2
    html, png = Path(argv[0]), Path(argv[1])
    why = browser_missing()
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    expected = expected_cells(html.parent / "results.csv", read_paper())
    with chromium() as (ctx, requests):
        page = open_report(ctx, html)
        problems = check_table1(page, expected)
        page.screenshot(path=str(png), full_page=True)
        leaks = outside_requests(requests, html)
    for p in problems + [f"request left the file: {u}" for u in leaks]:
        print(p)
    print(f"{len(expected)} Table I cells checked, {len(problems)} mismatches, "
          f"{len(leaks)} outside requests; screenshot {png}")
    return 1 if problems or leaks else 0


if __name__ == "__main__":
    sys.exit(main())
