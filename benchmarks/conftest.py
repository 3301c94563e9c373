import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return Path(os.environ.get("PARAISITE_BENCH_DATA", REPO.parent / "shared" / "data")).resolve()
