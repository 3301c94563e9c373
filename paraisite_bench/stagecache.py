"""The stage cache: trained stages shared by every run directory of a machine.

A stage's key hashes everything that determines its result (:func:`paraisite_bench.jobs.add_stage`), so a
stage trained by one run is the stage another run would train. Stages that other stages build on (a
pretraining stage, the AFLOW stage of ``double``) are the expensive ones that many runs share: the runner
puts them here when they are trained and takes them from here before training them again.

Layout: ``<cache_dir>/stages/<key>/checkpoint.pt`` and ``stage.json`` (the stage's spec, its training
summary and the checkpoint's checksum). ``stage.json`` is written last, so an entry without it is
incomplete and ignored; an entry whose checkpoint no longer matches its checksum is damaged: it is removed
and the stage is trained again.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .checkpoint import checkpoint_digest, write_checkpoint_bytes


class StageCache:
    """Trained stages by key under ``root`` (``<cache_dir>/stages``)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str) -> bool:
        """Whether a complete entry exists (its checksum is checked when it is taken, by :meth:`take`)."""
        entry = self.entry(key)
        return (entry / "stage.json").is_file() and (entry / "checkpoint.pt").is_file()

    def take(self, key: str, checkpoint: Path) -> dict | None:
        """Copy the stage's checkpoint to ``checkpoint`` and return its record (``spec``, ``summary``,
        ``checksum``), or None when there is no intact entry; a damaged entry is removed."""
        if not self.has(key):
            return None
        entry = self.entry(key)
        try:
            record = json.loads((entry / "stage.json").read_text())
            intact = checkpoint_digest(entry / "checkpoint.pt") == record["checksum"]
        except (OSError, ValueError, KeyError):
            intact = False
        if not intact:
            shutil.rmtree(entry, ignore_errors=True)
            return None
        write_checkpoint_bytes(Path(checkpoint), (entry / "checkpoint.pt").read_bytes())
        return record

    def put(self, spec: dict, summary: dict, checksum: str, checkpoint: Path) -> None:
        """Keep a trained stage (its checkpoint file, spec and summary); an existing entry is left alone."""
        entry = self.entry(spec["key"])
        if self.has(spec["key"]):
            return
        write_checkpoint_bytes(entry / "checkpoint.pt", Path(checkpoint).read_bytes())
        record = {"spec": spec, "summary": summary, "checksum": checksum}
        tmp = entry / f"stage.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, entry / "stage.json")
