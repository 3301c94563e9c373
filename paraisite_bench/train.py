"""One training stage (the paper's training loop) and the evaluation of a trained model."""

from __future__ import annotations

import io
import hashlib
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .backbone import ParAIsiteModel
from .compilation import wants_compile
from .context import Context
from .errors import UserError
from .protocol import fit_transform, make_transform, metric_for


@dataclass(frozen=True)
class StageSpec:
    """Everything a training stage needs; its ``key`` identifies it in the store."""

    key: str
    backbone: str
    init: str  # "random" | "weights:<source>" | "previous"
    parent: str | None
    dataset: str
    split: int
    options: dict
    label: str = ""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def checkpoint_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:20]


def save_checkpoint(path: Path, payload: dict) -> str:
    """Write atomically (tmp + rename) and return the file's digest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()[:20]


def load_checkpoint(path: Path, digest: str | None = None) -> dict:
    if digest is not None and checkpoint_digest(path) != digest:
        raise UserError(f"checkpoint {path} does not match its recorded checksum (corrupted): "
                        "it will be retrained")
    return torch.load(path, map_location="cpu", weights_only=False)


def build_model(ctx: Context, spec: StageSpec, parent_ckpt: dict | None) -> tuple[ParAIsiteModel, dict]:
    bb = ctx.backbone(spec.backbone)
    module = bb.build()
    info: dict[str, Any] = {"init": spec.init}
    if spec.init.startswith("weights:"):
        info.update(bb.load_weights(module, spec.init.split(":", 1)[1], ctx.data_dir))
    model = ParAIsiteModel(module, bb.representation_dim, tuple(spec.options["head"]))
    if spec.init == "previous":
        if parent_ckpt is None:
            raise RuntimeError(f"stage {spec.label} needs its parent's checkpoint")
        model.load_state_dict(parent_ckpt["model"], strict=True)
        info["parent"] = spec.parent
        info["tensors_loaded"] = len(parent_ckpt["model"])
    return model, info


def _predict(model, bb, feats: list, batch_size: int = 64, device=None) -> torch.Tensor:
    """The plain path: collate and predict in chunks of ``batch_size``."""
    out = []
    with torch.no_grad():
        for chunk in _batches(feats, batch_size):
            batch = bb.collate(chunk)
            if device is not None:
                batch = bb.to_device(batch, device)
            out.append(model(batch).reshape(-1).cpu())
    return torch.cat(out) if out else torch.empty(0)


#: Structures per forward pass when the fast path predicts a set. Measured on CPU (1 thread, AFLOW
#: validation part): 64 → 1,450/s, 256 → 1,100–1,270/s, the whole 200 in one batch → 1,050–1,220/s
#: (activations outgrow the caches), so validation is not done in one big batch.
EVAL_CHUNK = 64


def _predict_fast(model, bb, feats: list, device=None, batcher=None) -> torch.Tensor:
    """The fast path: index-based batches of EVAL_CHUNK structures from a batcher built once."""
    if not feats:
        return torch.empty(0)
    batcher = batcher or bb.batcher(feats)
    out = []
    with torch.no_grad():
        for chunk in _batches(list(range(len(feats))), EVAL_CHUNK):
            batch = batcher(chunk)
            if device is not None:
                batch = bb.to_device(batch, device)
            out.append(model(batch).reshape(-1).cpu())
    return torch.cat(out)


def predict(model, backbone, feats: list, device=None) -> torch.Tensor:
    """A trained model's raw (standardised) outputs on featurised records, in the model's eval mode; pass them
    through the stage's transform (``make_transform``) for values in the target's units. Public, for plugins
    and scripts that score a model outside the runner (e.g. matbench's folds)."""
    model.eval()
    return _predict_fast(model, backbone, list(feats), device)


#: Training loops: "fast" (index-based batching, fused Adam, validation batcher built once) and "plain"
#: (a PyG ``Batch`` per step, default Adam, validation in chunks of 64): the reference for speed and
#: equivalence checks. Both see the same batches in the same order with the same seeds.
LOOPS = ("fast", "plain")


def _optimizer(params, lr: float, loop: str, device: torch.device):
    if loop == "fast":
        try:  # one fused kernel for all ~100 parameter tensors (same update rule as the default)
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError):
            params = list(params)  # fused Adam is not available for this device
            return torch.optim.Adam(params, lr=lr, foreach=True)
    return torch.optim.Adam(params, lr=lr)


def stage_ids(ctx: Context, spec: StageSpec) -> tuple[list[str], list[str]]:
    """(training ids, epoch-selection ids) of a stage: the 80/20 parts in paper mode, the inner parts
    of the 80 % in held-out mode; records the backbone could not featurise are left out."""
    feats = ctx.features(spec.backbone, spec.dataset)
    split = ctx.split(spec.dataset, spec.split)
    if spec.options["selection"] == "paper":
        train_ids, val_ids = split.train, split.test
    else:
        train_ids, val_ids = split.inner_train, split.inner_val
    return [i for i in train_ids if i in feats], [i for i in val_ids if i in feats]


def train_stage(ctx: Context, spec: StageSpec, parent_ckpt: dict | None,
                on_epoch: Callable[[int, int], None] | None = None, *, loop: str = "fast",
                device: str | torch.device = "cpu", compile_mode: str | None = None) -> tuple[dict, dict]:
    """Train one stage. Returns (checkpoint payload, summary with curves and the selected epoch).

    ``loop`` picks the training loop (see :data:`LOOPS`); ``device`` where the model runs.
    With ``options["early_stop"] = P`` (off unless given) training stops after P epochs without a
    better validation MAPE; the selected epoch is still the best one seen."""
    if loop not in LOOPS:
        raise ValueError(f"unknown training loop {loop!r}: expected one of {LOOPS}")
    t0 = time.time()
    device = torch.device(device)
    opts = spec.options
    seed_everything(opts["seed"])
    bb = ctx.backbone(spec.backbone)
    feats = ctx.features(spec.backbone, spec.dataset)
    records = ctx.dataset(spec.dataset).records
    split = ctx.split(spec.dataset, spec.split)
    train_ids, val_ids = stage_ids(ctx, spec)
    if not train_ids or not val_ids:
        raise UserError(f"stage {spec.label}: nothing to train on ({len(train_ids)} training, "
                        f"{len(val_ids)} validation records)")
    scaler_ids = [i for i in (split.train + split.test if opts["scaler_fit"] == "all" else split.train) if i in feats]
    target = ctx.registry.dataset(spec.dataset).target
    transform = fit_transform(target, [records[i].kappa for i in scaler_ids])
    metric = metric_for(target)

    model, info = build_model(ctx, spec, parent_ckpt)
    model.to(device)
    optimizer = _optimizer(model.parameters(), opts["lr"], loop, device)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=opts["cosine_tmax"])
                 if opts["cosine_tmax"] else None)

    train_feats = [feats[i] for i in train_ids]
    train_kappa = torch.tensor([records[i].kappa for i in train_ids], dtype=torch.float32, device=device)
    val_feats = [feats[i] for i in val_ids]
    val_kappa = np.array([records[i].kappa for i in val_ids])
    gen = torch.Generator().manual_seed(opts["seed"])
    bs = opts["batch_size"]
    epochs = opts["epochs"]
    patience = opts.get("early_stop") or 0
    if loop == "fast":
        train_batcher = bb.batcher(train_feats)
        val_batcher = bb.batcher(val_feats)
        make_batch = train_batcher
        predict_val = lambda: _predict_fast(model, bb, val_feats, device, val_batcher)  # noqa: E731
    else:
        make_batch = lambda idx: bb.collate([train_feats[i] for i in idx])  # noqa: E731
        predict_val = lambda: _predict(model, bb, val_feats, device=device)  # noqa: E731
    on_device = device.type != "cpu"
    steps = epochs * -(-len(train_feats) // bs)
    if loop == "fast" and wants_compile(steps, compile_mode):
        sample = make_batch(list(range(min(bs, len(train_feats)))))
        accelerated = bb.accelerate(model.backbone, bb.to_device(sample, device) if on_device else sample)
        if accelerated:
            info["accelerated"] = accelerated  # stored with the stage (provenance), not part of its key
    curves = []
    best = (float("inf"), 0, None)
    stopped = None
    # Denormal floats (below 1.2e-38) cost ~100× a normal operation on x86. Fine-tuning from published
    # weights drives some activations there (softplus of large negative inputs, their gradients): a compiled
    # AFLOW stage from MEGNet's formation-energy weights ran 2.8× slower than one from random weights.
    # The fast loop flushes them to zero on its thread for the stage (values that small do not change
    # a float32 MAPE) and restores the default after.
    flush = loop == "fast" and not on_device and torch.set_flush_denormal(True)
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(len(train_feats), generator=gen).tolist()
            total = torch.zeros((), dtype=torch.float64, device=device)
            count = 0
            for idx in _batches(order, bs):
                batch = make_batch(idx)
                if on_device:
                    batch = bb.to_device(batch, device)
                kappa = train_kappa[idx]
                if target.metric == "mape":  # MAPE on κ (the paper's loss)
                    pred = transform.inverse(model(batch).reshape(-1))
                    loss = torch.mean(torch.abs(pred - kappa) / kappa)
                else:  # other targets: L1 on the standardised value (∝ MAE in the target's units)
                    loss = torch.mean(torch.abs(model(batch).reshape(-1) - transform.forward(kappa)))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach().double() * len(idx)  # no host sync per step
                count += len(idx)
            lr = optimizer.param_groups[0]["lr"]
            if scheduler is not None:
                scheduler.step()
            model.eval()
            val_mape = metric(transform.inverse(predict_val().numpy()), val_kappa)
            curves.append({"epoch": epoch, "train_mape": float(total) / count, "val_mape": val_mape, "lr": lr})
            if val_mape < best[0]:
                best = (val_mape, epoch, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
            if on_epoch:
                on_epoch(epoch, epochs)
            if patience and epoch - best[1] >= patience and epoch < epochs:
                stopped = epoch
                if on_epoch:  # progress counts the epochs that will not run as done
                    for skipped in range(epoch + 1, epochs + 1):
                        on_epoch(skipped, epochs)
                break
    finally:
        if flush:
            torch.set_flush_denormal(False)

    payload = {"model": best[2], "transform": (transform.mean, transform.std),
               "transform_kind": target.transform, "target": target.name, "key": spec.key,
               "backbone": spec.backbone, "best_epoch": best[1]}
    summary = {"best_epoch": best[1], "best_val": best[0], "n_train": len(train_ids), "n_val": len(val_ids),
               "weights_info": info, "curves": curves, "wall_s": time.time() - t0}
    if patience:
        summary["early_stop"] = {"patience": patience, "stopped_epoch": stopped}
    return payload, summary


def evaluate(ctx: Context, spec: StageSpec, ckpt: dict, test_datasets, *, loop: str = "fast",
             device: str | torch.device = "cpu") -> list[dict]:
    """MAPE (κ space) of a trained stage on split r's 20 % part of each test dataset; the model is
    built and loaded once for all of them."""
    bb = ctx.backbone(spec.backbone)
    device = torch.device(device)
    model = ParAIsiteModel(bb.build(), bb.representation_dim, tuple(spec.options["head"]))
    model.load_state_dict(ckpt["model"], strict=True)
    model.to(device)
    model.eval()
    transform = make_transform(ckpt.get("transform_kind", "log10p1"), *ckpt["transform"])
    results = []
    for test_dataset in test_datasets:
        feats = ctx.features(spec.backbone, test_dataset)
        records = ctx.dataset(test_dataset).records
        target = ctx.registry.dataset(test_dataset).target
        ids = [i for i in ctx.split(test_dataset, spec.split).test if i in feats]
        test_feats = [feats[i] for i in ids]
        raw = (_predict_fast(model, bb, test_feats, device) if loop == "fast"
               else _predict(model, bb, test_feats, device=device))
        pred = transform.inverse(raw.numpy())
        results.append({"test": test_dataset, "metric": target.metric,
                        "value": metric_for(target)(pred, [records[i].kappa for i in ids]), "n_test": len(ids)})
    return results
