"""``--executor ray``: tasks run as Ray tasks, on a private local Ray instance or on the cluster at
``--address``.

No shared filesystem is assumed for results: a task's parent checkpoint (or, for an evaluation, its
stored checkpoint) travels to the worker as bytes, and the trained checkpoint comes back as bytes and
is written into the launching machine's store. Each Ray node needs the package (and its plugins)
installed and the data root at the same path (``--data-dir``); features are cached in each node's own
cache directory. Ray is imported only when this executor is used (it is an optional dependency)."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import os
import queue
import tempfile
import uuid
from pathlib import Path

from paraisite_bench import worker
from paraisite_bench.errors import UserError
from paraisite_bench.executors import Executor, resolve_device

#: Fraction of a GPU a Ray job asks for: the models are tiny, several jobs share one card.
RAY_GPU_FRACTION = 0.25

#: The set-up this Ray worker process was started with (a Ray worker runs many tasks).
_started: str | None = None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'paraisite-bench[ray]' "
                        "(or pip install ray)") from None
    return ray


def _ray_job(setup_id: str, setup, task, parent_bytes: bytes | None, own_bytes: bytes | None) -> dict:
    """Run one task on a Ray worker: checkpoints in and out as bytes, nothing left on its disk."""
    global _started
    if _started != setup_id:
        try:  # the launcher may have no GPU: "auto" and "cuda" mean this node's
            worker.start(dataclasses.replace(setup, device=resolve_device(setup.device)))
        except UserError as exc:
            return {"key": task.spec.key, "error": f"on Ray node {os.uname().nodename}: {exc}"}
        _started = setup_id
    with tempfile.TemporaryDirectory(prefix="paraisite-ray-") as tmp:
        own = Path(tmp) / "stage.pt"
        parent = None
        if parent_bytes is not None:
            parent = Path(tmp) / "parent.pt"
            parent.write_bytes(parent_bytes)
        if own_bytes is not None:
            own.write_bytes(own_bytes)
        local = dataclasses.replace(task, checkpoint=str(own),
                                    parent_checkpoint=str(parent) if parent else None)
        out = worker.run_task(local)
        if task.train and "error" not in out:
            out["checkpoint_bytes"] = own.read_bytes()
    out["host"] = os.uname().nodename
    return out


def _store_checkpoint(task, out: dict) -> dict:
    """Write the trained checkpoint that came back into the launching machine's store."""
    data = out.pop("checkpoint_bytes", None)
    if data is None:
        return out
    if hashlib.sha256(data).hexdigest()[:20] != out.get("checksum"):
        return {"key": task.spec.key,
                "error": "checkpoint bytes from the Ray worker do not match their checksum"}
    path = Path(task.checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return out


class RayExecutor(Executor):
    """Tasks as Ray tasks (``ray.init(address=...)``; a private local instance of ``workers`` × threads
    CPUs without an address). Ray reports no per-epoch progress: a stage's epochs count when it ends."""

    name = "ray"
    description = "Ray tasks: a private local instance, or the cluster at --address (pip install ray)"
    takes_address = True
    remote = True

    def __init__(self, setup, **kwargs):
        super().__init__(setup, **kwargs)
        ray = _import_ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home (works offline)
        self.ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            self._init_ray()
        # "auto" asks for no GPU share: a job that finds a GPU on its node uses it, else the CPU
        self._remote = ray.remote(_ray_job).options(
            num_cpus=setup.threads, num_gpus=RAY_GPU_FRACTION if setup.device == "cuda" else 0, max_retries=0)
        self._setup_id = uuid.uuid4().hex
        self._refs: list = []
        self._trained: queue.SimpleQueue = queue.SimpleQueue()

    def _init_ray(self) -> None:
        kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            if self.address:
                self.ray.init(address=self.address, **kwargs)
            else:
                self.ray.init(num_cpus=self.workers * self.setup.threads, **kwargs)
        except Exception as exc:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            raise UserError(f"--executor ray: cannot start or reach {where} "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None

    def submit(self, task) -> cf.Future:
        ships_parent = task.train and task.parent_checkpoint
        parent_bytes = Path(task.parent_checkpoint).read_bytes() if ships_parent else None
        own_bytes = None if task.train else Path(task.checkpoint).read_bytes()
        ref = self._remote.remote(self._setup_id, self.setup, task, parent_bytes, own_bytes)
        self._refs.append(ref)
        fut: cf.Future = cf.Future()

        def done(rf: cf.Future):
            if task.train:  # counted before the runner can see the result
                self._trained.put(task.spec)
            try:
                fut.set_result(_store_checkpoint(task, rf.result()))
            except Exception as exc:  # the Ray task itself failed (worker died, cancelled)
                fut.set_exception(exc)

        ref.future().add_done_callback(done)
        return fut

    def poll(self) -> None:
        while not self._trained.empty():
            spec = self._trained.get()
            total = spec.options["epochs"]
            for epoch in range(1, total + 1):
                self.on_epoch(spec.key, epoch, total)

    def shutdown(self, interrupted: bool = False) -> None:
        for ref in self._refs:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:
                pass
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()
