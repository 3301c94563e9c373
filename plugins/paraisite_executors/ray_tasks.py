"""``--executor ray``: tasks run as Ray tasks, on a private local Ray instance or on the cluster at
``--address``.

No shared filesystem is assumed for results: a task's parent checkpoint (or, for an evaluation, its
stored checkpoint) travels to the worker as bytes, and the trained checkpoint comes back as bytes and
is written into the launching machine's store. Each Ray node needs the package (and its plugins)
installed and the data root at the same path (``--data-dir``); features are cached in each node's own
cache directory. Ray is imported only when this executor is used (it is an optional dependency)."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import os
import queue
import tempfile
import uuid
from pathlib import Path

from paraisite_bench import worker
from paraisite_bench.checkpoint import write_checkpoint_bytes
from paraisite_bench.errors import UserError
from paraisite_bench.executors import Executor, resolve_device

#: Fraction of a GPU a Ray job asks for: the models are tiny, several jobs share one card.
RAY_GPU_FRACTION = 0.25

#: Hosts that mean "this machine": a private instance, or a cluster started here, stays on loopback.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")

#: The set-up this Ray worker process was started with (a Ray worker runs many tasks).
_started: str | None = None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'paraisite-bench[ray]' "
                        "(or pip install ray)") from None
    return ray


def _on_loopback(address: str | None) -> bool:
    """Whether the Ray instance is on this machine: a private one (no address) or ``127.0.0.1:PORT``."""
    return address is None or address.rsplit(":", 1)[0].strip("[]") in LOOPBACK_HOSTS


@contextlib.contextmanager
def _loopback_only():
    """While a Ray instance on this machine starts or is joined: bind and talk on 127.0.0.1 only.

    Ray (2.60) turns 127.0.0.1 into the machine's external address (``services.resolve_ip_for_localhost``)
    and binds its servers there, unless its multi-node switch is off: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
    read once at import into ``ray._private.ray_constants.ENABLE_RAY_CLUSTER``. Both are set while
    ``ray.init`` runs (the processes it starts inherit the variable) and restored after; the driver then
    uses its node's address."""
    from ray._private import ray_constants

    var = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    before_env, before_flag = os.environ.get(var), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[var], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before_flag
        if before_env is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = before_env


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
    try:
        write_checkpoint_bytes(Path(task.checkpoint), data)
    except UserError as exc:
        return {"key": task.spec.key, "error": str(exc)}
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
        # "auto" asks for no GPU share: a job that finds a GPU on its node uses it, else the CPU.
        # max_retries=0: a job whose worker dies (killed, out of memory, a crash in a plugin) is reported
        # failed at once rather than silently rerun up to 3 times; nothing stored is lost and the same
        # command runs it again.
        self._remote = ray.remote(_ray_job).options(
            num_cpus=setup.threads, num_gpus=RAY_GPU_FRACTION if setup.device == "cuda" else 0, max_retries=0)
        self._setup_id = uuid.uuid4().hex
        self._refs: list = []
        self._trained: queue.SimpleQueue = queue.SimpleQueue()

    def _init_ray(self) -> None:
        kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        local = _on_loopback(self.address)
        if local:  # this machine only: never its external interface
            kwargs["_node_ip_address"] = "127.0.0.1"
        try:
            with _loopback_only() if local else contextlib.nullcontext():
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
                result = rf.result()
            except self.ray.exceptions.TaskCancelledError as exc:  # shutdown(interrupted=True)
                fut.set_exception(exc)
                return
            except Exception as exc:  # the Ray task itself failed: its worker died (killed, out of memory)
                first = (str(exc).splitlines() or [""])[0][:200]
                fut.set_result({"key": task.spec.key,
                                "error": f"the Ray worker died during this job ({type(exc).__name__}: "
                                         f"{first}) — run the same command to retry it"})
                return
            try:
                fut.set_result(_store_checkpoint(task, result))
            except Exception as exc:
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
