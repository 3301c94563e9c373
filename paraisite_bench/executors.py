"""Where jobs run: this process, local worker processes, or a Ray cluster; and on which device.

Every executor runs the same job graph (the scheduling, dependencies and the store stay in
:func:`paraisite_bench.runner.execute` on the launching machine). The Ray executor does not assume a
shared filesystem for results: a job's parent checkpoint travels to the worker as bytes, and the
trained checkpoint comes back as bytes and is written into the launching machine's store. Each Ray
node needs the package (and its plugins) installed and the data root at the same path
(``--data-dir``); features are cached in each node's own cache directory.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import os
import tempfile
from pathlib import Path

import torch

from .compilation import set_compile_mode
from .errors import UserError

EXECUTORS = ("local", "ray")
DEVICES = ("auto", "cpu", "cuda")
#: Fraction of a GPU a Ray job asks for: the models are tiny, several jobs share one card.
RAY_GPU_FRACTION = 0.25


def resolve_device(name: str) -> str:
    """``auto`` → ``cuda`` if torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is a user error."""
    name = (name or "auto").lower()
    if name not in DEVICES:
        raise UserError(f"--device {name!r}: expected one of {', '.join(DEVICES)}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise UserError(f"--device cuda: torch {torch.__version__} ({build}) sees no CUDA GPU on this "
                        "machine: use --device cpu (or auto)")
    return name


# ---- Ray ------------------------------------------------------------------------------------------

def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'paraisite-bench[ray]' (or pip install ray)") from None
    return ray


def _ray_job(setup: dict, task, parent_bytes: bytes | None, own_bytes: bytes | None) -> dict:
    """Run one task on a Ray worker: checkpoints in and out as bytes, nothing left on its disk."""
    from . import runner

    key = repr(sorted(setup.items(), key=lambda kv: kv[0]))
    setup = dict(setup)
    set_compile_mode(setup.pop("compile", None))  # the launcher's --compile, for this worker's stages
    if runner._WORKER.get("setup_key") != key:
        try:
            runner.setup_worker_context(**dict(setup, device=resolve_device(setup["device"])))
        except UserError as exc:
            return {"key": task.spec.key, "error": f"on Ray node {os.uname().nodename}: {exc}"}
        runner._WORKER["setup_key"] = key
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
        out = runner.run_task(local)
        if task.train and "error" not in out:
            out["checkpoint_bytes"] = own.read_bytes()
    out["host"] = os.uname().nodename
    return out


class RayExecutor(cf.Executor):
    """Runs tasks as Ray tasks (``ray.init(address=...)``; a private local instance without an address)."""

    def __init__(self, setup: dict, workers: int, threads: int, device: str, address: str | None = None):
        ray = _import_ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home (works offline)
        self.ray = ray
        self.setup = setup
        self.threads = threads
        self.device = device
        self._owns = not ray.is_initialized()
        if self._owns:
            kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            try:
                if address:
                    ray.init(address=address, **kwargs)
                else:
                    ray.init(num_cpus=max(1, workers) * threads, **kwargs)
            except Exception as exc:
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise UserError(f"--executor ray: cannot start or reach {where} "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
        # "auto" asks for no GPU share: a job that finds a GPU on its node uses it, else the CPU
        self._remote = ray.remote(_ray_job).options(
            num_cpus=threads, num_gpus=RAY_GPU_FRACTION if device == "cuda" else 0, max_retries=0)
        self._refs: list = []

    def submit_task(self, task) -> cf.Future:
        parent_bytes = Path(task.parent_checkpoint).read_bytes() if task.train and task.parent_checkpoint else None
        own_bytes = None if task.train else Path(task.checkpoint).read_bytes()
        ref = self._remote.remote(self.setup, task, parent_bytes, own_bytes)
        self._refs.append(ref)
        fut: cf.Future = cf.Future()

        def done(rf: cf.Future):
            try:
                out = rf.result()
                data = out.pop("checkpoint_bytes", None)
                if data is not None:  # the trained checkpoint lands in the launching machine's store
                    if hashlib.sha256(data).hexdigest()[:20] != out.get("checksum"):
                        out = {"key": task.spec.key, "error": "checkpoint bytes from the Ray worker do not "
                               "match their checksum"}
                    else:
                        path = Path(task.checkpoint)
                        path.parent.mkdir(parents=True, exist_ok=True)
                        tmp = path.with_suffix(f".tmp{os.getpid()}")
                        tmp.write_bytes(data)
                        os.replace(tmp, path)
                fut.set_result(out)
            except Exception as exc:  # the Ray task itself failed (worker died, cancelled)
                fut.set_exception(exc)

        ref.future().add_done_callback(done)
        return fut

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        """``submit(runner.run_task, task)``, as for the local executors: the task runs as a Ray task
        (``run_task`` is the only function a RayExecutor runs: checkpoints travel as bytes around it)."""
        from . import runner

        if fn is not runner.run_task or kwargs or len(args) != 1:
            raise TypeError("RayExecutor runs runner.run_task(task) only")
        return self.submit_task(args[0])

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            for ref in self._refs:
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:
                    pass
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()
