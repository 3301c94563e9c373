import json
import os
import platform
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Figures of this session (the ratios are computed from numbers measured in one run).
FIGURES: dict = {}


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return Path(os.environ.get("PARAISITE_BENCH_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory) -> Path:
    """The feature cache: $PARAISITE_BENCH_CACHE if set (warm), else a fresh one for this session."""
    env = os.environ.get("PARAISITE_BENCH_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("bench-cache")


@pytest.fixture(scope="session")
def figures():
    return FIGURES


def pytest_sessionfinish(session):
    if not FIGURES:
        return
    import psutil

    FIGURES["machine"] = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "load_avg": os.getloadavg(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                          "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}
    out = Path(os.environ.get("PARAISITE_BENCH_FIGURES", REPO / ".benchmarks" / "figures.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(FIGURES, indent=1, default=str))
    print(f"\nbenchmark figures → {out}")
