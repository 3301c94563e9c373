"""One training stage (the paper's training loop) and the evaluation of a trained model."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, fields
from typing import Any, Callable

import numpy as np
import torch

from .backbone import ParAIsiteModel
from .checkpoint import checkpoint_payload, model_from_checkpoint
from .compilation import wants_compile
from .context import Context
from .data import Target
from .errors import UserError
from .overlap import matching_ids
from .recipe import AdamCosine, Recipe
from .strategy import Init


@dataclass(frozen=True)
class StageSpec:
    """Everything a training stage needs; its ``key`` identifies it in the store."""

    key: str
    backbone: str
    #: How the stage's model starts, with its weights source resolved (``weights:eform``, never
    #: ``weights:default``); ``str(init)`` is the form keys, labels and the store use.
    init: Init
    parent: str | None
    dataset: str
    split: int
    options: dict
    label: str = ""

    def record(self) -> dict:
        """The spec as the store keeps it (JSON-ready): every field, the init in its string form."""
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "init": str(self.init)}

    @staticmethod
    def from_record(record: dict) -> "StageSpec":
        """The spec that :meth:`record` wrote (the store's ``spec`` of a stage)."""
        known = {f.name for f in fields(StageSpec)}
        return StageSpec(**{**{k: v for k, v in record.items() if k in known},
                            "init": Init.parse(str(record["init"]))})


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def build_model(ctx: Context, spec: StageSpec, parent_ckpt: dict | None) -> tuple[ParAIsiteModel, dict]:
    """The stage's model as it starts (random, published weights or the parent's model), and what was
    loaded into it (stored with the stage as its ``weights_info``: ``init``, ``init_kind``, ``source``)."""
    bb = ctx.backbone(spec.backbone)
    module = bb.build()
    info: dict[str, Any] = {"init": str(spec.init), "init_kind": spec.init.kind}
    if spec.init.kind == "weights":
        info["source"] = spec.init.source
        info.update(bb.load_weights(module, spec.init.source, ctx.data_dir))
    model = ParAIsiteModel(module, bb.representation_dim, tuple(spec.options["head"]))
    if spec.init.kind == "previous":
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
    """A trained model's raw (transformed) outputs on featurised records, in the model's eval mode; pass
    them through the checkpoint's transform (``model_from_checkpoint(...).transform.inverse``) for values
    in the target's units. Public, for plugins and scripts that score a model outside the runner (e.g.
    matbench's folds)."""
    model.eval()
    return _predict_fast(model, backbone, list(feats), device)


#: Training loops: "fast" (index-based batching, fused Adam, validation batcher built once) and "plain"
#: (a PyG ``Batch`` per step, default Adam, validation in chunks of 64): the reference for speed and
#: equivalence checks. Both see the same batches in the same order with the same seeds.
LOOPS = ("fast", "plain")


def removed_ids(ctx: Context, dataset: str, options: dict) -> set[str]:
    """Ids a stage with ``options`` on ``dataset`` leaves out: none, unless it is a decontaminated pretraining
    stage (``options["decontaminate"]``, see :mod:`paraisite_bench.leakage`)."""
    deco = options.get("decontaminate")
    if not deco:
        return set()
    return matching_ids(ctx, dataset, deco["against"], deco["by"])


def stage_ids(ctx: Context, spec: StageSpec) -> tuple[list[str], list[str]]:
    """(training ids, epoch-selection ids) of a stage: the 80/20 parts in paper mode, the inner parts
    of the 80 % in held-out mode; records the backbone could not featurise, and those a decontaminated
    pretraining stage leaves out, are not in them."""
    feats = ctx.features(spec.backbone, spec.dataset)
    split = ctx.split(spec.dataset, spec.split, spec.options)
    if spec.options["selection"] == "paper":
        train_ids, val_ids = split.train, split.test
    else:
        train_ids, val_ids = split.inner_train, split.inner_val
    removed = removed_ids(ctx, spec.dataset, spec.options)  # a decontaminated pretraining stage
    keep = [i for i in train_ids if i in feats and i not in removed]
    return keep, [i for i in val_ids if i in feats and i not in removed]


@dataclass
class StageData:
    """A stage's records as its training loop uses them, and the target transform fitted for it."""

    train_ids: list[str]
    val_ids: list[str]
    train_feats: list
    val_feats: list
    #: training values (float32, on the stage's device) and validation values, in the target's units
    train_values: torch.Tensor
    val_values: np.ndarray
    target: Target
    transform: Any


def stage_data(ctx: Context, spec: StageSpec, device: torch.device) -> StageData:
    """The stage's training and validation records; the transform is fitted on the split's records
    ("all") or its training part ("train"), as ``options["scaler_fit"]`` says."""
    feats = ctx.features(spec.backbone, spec.dataset)
    split = ctx.split(spec.dataset, spec.split, spec.options)
    train_ids, val_ids = stage_ids(ctx, spec)
    if not train_ids or not val_ids:
        raise UserError(f"stage {spec.label}: nothing to train on ({len(train_ids)} training, "
                        f"{len(val_ids)} validation records)")
    fit_on = split.train + split.test if spec.options["scaler_fit"] == "all" else split.train
    return stage_data_of(ctx, spec.dataset, feats, train_ids, val_ids, [i for i in fit_on if i in feats],
                         device)


def stage_data_of(ctx: Context, dataset: str, feats: dict, train_ids: list[str], val_ids: list[str],
                  fit_ids: list[str], device: torch.device) -> StageData:
    """The StageData of given training and validation records of ``dataset``, its target transform fitted
    on the values of ``fit_ids``."""
    records = ctx.dataset(dataset).records
    target = ctx.registry.dataset(dataset).target
    transform = target.kind.fit([records[i].value for i in fit_ids])
    return StageData(
        train_ids, val_ids, [feats[i] for i in train_ids], [feats[i] for i in val_ids],
        torch.tensor([records[i].value for i in train_ids], dtype=torch.float32, device=device),
        np.array([records[i].value for i in val_ids]), target, transform)


def _model_and_recipe(ctx: Context, spec: StageSpec, parent_ckpt: dict | None, loop: str,
                      device: torch.device, n_train: int):
    """(model on ``device``, weights info, the stage's training recipe)."""
    model, info = build_model(ctx, spec, parent_ckpt)
    model.to(device)
    name = spec.options.get("recipe")
    recipe_class = ctx.registry.get("recipe", name) if name else AdamCosine
    steps_per_epoch = -(-n_train // spec.options["batch_size"])
    return model, info, recipe_class(model, spec.options, steps_per_epoch, loop, device)


def _batching(bb, model, data: StageData, loop: str, device: torch.device):
    """(``indices -> training batch``, ``() -> raw predictions on the validation records``) of a loop."""
    if loop == "fast":
        val_batcher = bb.batcher(data.val_feats)
        return (bb.batcher(data.train_feats),
                lambda: _predict_fast(model, bb, data.val_feats, device, val_batcher))
    return (lambda idx: bb.collate([data.train_feats[i] for i in idx]),
            lambda: _predict(model, bb, data.val_feats, device=device))


def _accelerate(bb, model, make_batch, data: StageData, spec: StageSpec, loop: str, device: torch.device,
                compile_mode: str | None, info: dict) -> None:
    """Let the backbone speed up a long stage of the fast loop (see ``Backbone.accelerate``)."""
    bs = spec.options["batch_size"]
    steps = spec.options["epochs"] * -(-len(data.train_feats) // bs)
    if loop == "fast" and wants_compile(steps, compile_mode):
        sample = make_batch(list(range(min(bs, len(data.train_feats)))))
        if device.type != "cpu":
            sample = bb.to_device(sample, device)
        accelerated = bb.accelerate(model.backbone, sample)
        if accelerated:
            info["accelerated"] = accelerated  # stored with the stage (provenance), not part of its key


def _train_epoch(model, bb, recipe: Recipe, make_batch, data: StageData, gen: torch.Generator, bs: int,
                 device: torch.device) -> float:
    """One pass over the training records in a shuffled order; returns the mean training loss."""
    model.train()
    order = torch.randperm(len(data.train_feats), generator=gen).tolist()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    loss_fn = data.target.kind.loss
    optimizer = recipe.optimizer
    for idx in _batches(order, bs):
        batch = make_batch(idx)
        if device.type != "cpu":
            batch = bb.to_device(batch, device)
        values = data.train_values[idx]
        loss = loss_fn(model(batch).reshape(-1), values, data.transform)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        recipe.after_step()
        total += loss.detach().double() * len(idx)  # no host sync per step
        count += len(idx)
    return float(total) / count


def _validate(model, predict_val, data: StageData) -> float:
    """The target kind's metric on the validation records (in the target's units)."""
    model.eval()
    return data.target.kind.metric(data.transform.inverse(predict_val().numpy()), data.val_values)


@dataclass
class EpochLoopResult:
    best_val: float
    best_epoch: int
    best_state: dict | None
    curves: list[dict]
    stopped: int | None
    #: the weights and epoch at the end of training (the ``last`` selection mode reads them)
    last_state: dict | None = None
    last_epoch: int = 0
    #: the recipe's averaged weights scored on the validation part (``{"val", "selected"}``), if it has any
    averaged: dict | None = None


def _state_copy(model, into: dict | None = None) -> dict:
    """A CPU copy of the model's weights, written into ``into`` (an earlier copy of the same model) when
    given: a stage copies its best weights at every better epoch, and allocating fresh tensors costs several
    times the copy itself (CrabNet's 4.4 M values: 45-170 ms fresh, 3-40 ms in place, on the shared CPU)."""
    if into is None:
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    for k, v in model.state_dict().items():
        into[k].copy_(v.detach())
    return into


def _epoch_loop(model, bb, recipe: Recipe, make_batch, predict_val, data: StageData, opts: dict,
                device: torch.device, on_epoch) -> EpochLoopResult:
    """Train ``opts["epochs"]`` epochs (fewer with early stopping); keep the weights of the epoch with
    the best validation metric."""
    gen = torch.Generator().manual_seed(opts["seed"])
    epochs = opts["epochs"]
    patience = opts.get("early_stop") or 0
    out = EpochLoopResult(float("inf"), 0, None, [], None)
    for epoch in range(1, epochs + 1):
        train_loss = _train_epoch(model, bb, recipe, make_batch, data, gen, opts["batch_size"], device)
        lr = recipe.lr()
        val = _validate(model, predict_val, data)
        recipe.after_epoch(epoch, val)
        out.curves.append({"epoch": epoch, "train_mape": train_loss, "val_mape": val, "lr": lr})
        if val < out.best_val:
            out.best_val, out.best_epoch = val, epoch
            out.best_state = _state_copy(model, out.best_state)
        out.last_epoch = epoch
        if on_epoch:
            on_epoch(epoch, epochs)
        if patience and epoch - out.best_epoch >= patience and epoch < epochs:
            out.stopped = epoch
            if on_epoch:  # progress counts the epochs that will not run as done
                for skipped in range(epoch + 1, epochs + 1):
                    on_epoch(skipped, epochs)
            break
    out.last_state = _state_copy(model)
    out.averaged = _score_averaged(model, recipe, predict_val, data, out)
    return out


def _score_averaged(model, recipe: Recipe, predict_val, data: StageData, out: EpochLoopResult) -> dict | None:
    """Score the recipe's averaged weights (if any) on the validation part as one more candidate after the
    last epoch (see :class:`paraisite_bench.recipe.Recipe`); the model is left with its last weights."""
    averaged = recipe.averaged_state()
    if averaged is None:
        return None
    model.load_state_dict(averaged, strict=True)
    val = _validate(model, predict_val, data)
    model.load_state_dict(out.last_state, strict=True)
    selected = val < out.best_val
    if selected:
        out.best_val, out.best_epoch = val, out.last_epoch
        out.best_state = {k: v.detach().to("cpu", copy=True) for k, v in averaged.items()}
    return {"val": val, "selected": selected}


def train_stage(ctx: Context, spec: StageSpec, parent_ckpt: dict | None,
                on_epoch: Callable[[int, int], None] | None = None, *, loop: str = "fast",
                device: str | torch.device = "cpu", compile_mode: str | None = None) -> tuple[dict, dict]:
    """Train one stage. Returns (checkpoint payload, summary with curves and the selected epoch).

    ``loop`` picks the training loop (see :data:`LOOPS`); ``device`` where the model runs.
    With ``options["early_stop"] = P`` (off unless given) training stops after P epochs without a
    better validation metric; the selected epoch is still the best one seen."""
    if loop not in LOOPS:
        raise ValueError(f"unknown training loop {loop!r}: expected one of {LOOPS}")
    t0 = time.time()
    device = torch.device(device)
    opts = spec.options
    seed_everything(opts["seed"])
    bb = ctx.backbone(spec.backbone)
    data = stage_data(ctx, spec, device)
    model, info, recipe = _model_and_recipe(ctx, spec, parent_ckpt, loop, device, len(data.train_feats))
    make_batch, predict_val = _batching(bb, model, data, loop, device)
    _accelerate(bb, model, make_batch, data, spec, loop, device, compile_mode, info)
    # Denormal floats (below 1.2e-38) cost ~100× a normal operation on x86. Fine-tuning from published
    # weights drives some activations there (softplus of large negative inputs, their gradients): a compiled
    # AFLOW stage from MEGNet's formation-energy weights ran 2.8× slower than one from random weights.
    # The fast loop flushes them to zero on its thread for the stage (values that small do not change
    # a float32 MAPE) and restores the default after.
    flush = loop == "fast" and device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        result = _epoch_loop(model, bb, recipe, make_batch, predict_val, data, opts, device, on_epoch)
    finally:
        if flush:
            torch.set_flush_denormal(False)
    # the paper regime keeps the final weights too: the `last` selection mode reads them from the same stage
    last = ({"last_model": result.last_state, "last_epoch": result.last_epoch}
            if opts["selection"] == "paper" else {})
    payload = checkpoint_payload(result.best_state, bb, tuple(opts["head"]), data.target.name,
                                 data.target.kind, data.transform, key=spec.key, best_epoch=result.best_epoch,
                                 **last)
    summary = {"best_epoch": result.best_epoch, "best_val": result.best_val, "n_train": len(data.train_ids),
               "n_val": len(data.val_ids), "weights_info": info, "curves": result.curves,
               "wall_s": time.time() - t0}
    if result.averaged is not None:
        summary["averaged"] = result.averaged
    if opts.get("early_stop"):
        summary["early_stop"] = {"patience": opts["early_stop"], "stopped_epoch": result.stopped}
    return payload, summary


def _readings(spec: StageSpec, ckpt: dict) -> list[tuple[str, dict, int | None]]:
    """(selection mode, weights, epoch) of each reading of a trained stage: its selected weights, and its
    final ones when the checkpoint keeps them (see :func:`paraisite_bench.protocol.readings`)."""
    out = [(spec.options["selection"], ckpt["model"], ckpt.get("best_epoch"))]
    if "last_model" in ckpt:
        out.append(("last", ckpt["last_model"], ckpt.get("last_epoch")))
    return out


def evaluate(ctx: Context, spec: StageSpec, ckpt: dict, test_datasets, *, loop: str = "fast",
             device: str | torch.device = "cpu") -> list[dict]:
    """Every metric of each test dataset's target kind (MAPE first for κ) for a trained stage on split r's
    20 % part of each test dataset, under each reading of the stage (``paper`` and ``last``, or
    ``heldout``); the model is rebuilt from the checkpoint once."""
    restored = model_from_checkpoint(ctx, ckpt)
    bb = restored.backbone
    device = torch.device(device)
    model = restored.model.to(device)
    results = []
    for selection, state, epoch in _readings(spec, ckpt):
        model.load_state_dict(state, strict=True)
        model.eval()
        for test_dataset in test_datasets:
            feats = ctx.features(bb.name, test_dataset)
            records = ctx.dataset(test_dataset).records
            kind = ctx.registry.dataset(test_dataset).target.kind
            ids = [i for i in ctx.split(test_dataset, spec.split, spec.options).test if i in feats]
            test_feats = [feats[i] for i in ids]
            raw = (_predict_fast(model, bb, test_feats, device) if loop == "fast"
                   else _predict(model, bb, test_feats, device=device))
            pred = restored.transform.inverse(raw.numpy())
            results.append({"test": test_dataset, "selection": selection, "epoch": epoch, "n_test": len(ids),
                            "metrics": kind.scores(pred, [records[i].value for i in ids])})
    return results
