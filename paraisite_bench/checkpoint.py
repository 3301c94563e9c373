"""Checkpoints of trained stages: written atomically, checked by digest, and self-describing.

A checkpoint carries what is needed to rebuild its model without the stage that trained it (as matgl
saves a model's init args next to its weights): the backbone's name and ``settings()``, the
representation width, the head's widths, the target kind and the fitted transform's parameters, next
to the weights. :func:`model_from_checkpoint` rebuilds the model from it.

A checkpoint written before these fields existed (it has ``model``, ``backbone``, ``transform`` as
``(mean, std)`` and ``transform_kind``) is still read: the head's widths and the representation width
are read off the weights' shapes.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .backbone import Backbone, ParAIsiteModel
from .errors import UserError
from .targets import KAPPA_KIND, REGRESSION_KIND, TargetKind, target_kind

#: The layout of a checkpoint's fields (absent in checkpoints written before the layout had a number).
FORMAT = 2


def checkpoint_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:20]


def save_checkpoint(path: Path, payload: dict) -> str:
    """Write atomically (see :func:`write_checkpoint_bytes`) and return the file's digest."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    write_checkpoint_bytes(Path(path), data)
    return hashlib.sha256(data).hexdigest()[:20]


def write_checkpoint_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file next to it, renamed over it. A write that
    fails (the disk is full, no permission) removes the temporary file, leaves ``path`` as it was and is
    one line (a :class:`UserError`): the stage is not stored, and the same command trains it again."""
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        what = exc.strerror or str(exc)
        hint = "free space" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else "fix this"
        raise UserError(f"cannot write checkpoint {path}: {what} — {hint} and run the same command "
                        "to resume") from None


def load_checkpoint(path: Path, digest: str | None = None) -> dict:
    if digest is not None and checkpoint_digest(path) != digest:
        raise UserError(f"checkpoint {path} does not match its recorded checksum (corrupted): "
                        "it will be retrained")
    return torch.load(path, map_location="cpu", weights_only=False)


def checkpoint_payload(state: dict, backbone: Backbone, head: tuple[int, ...], target_name: str,
                       kind: TargetKind, transform, **extra: Any) -> dict:
    """A self-describing checkpoint: the weights ``state`` of a ParAIsite model on ``backbone`` with a
    head of widths ``head``, trained on a target of ``kind`` with the fitted ``transform``; ``extra``
    fields (e.g. the stage's key and selected epoch) are kept as given."""
    return {"format": FORMAT, "model": state,
            "backbone": backbone.name, "backbone_settings": backbone.settings(),
            "representation_dim": backbone.representation_dim, "head": list(head),
            "target": target_name, "target_kind": kind.name, "transform": transform.params(), **extra}


@dataclass
class RestoredModel:
    """A model rebuilt from a checkpoint (on the CPU, in eval mode), with what it needs to be used:
    its backbone (featurise, batch), its target kind and its fitted transform (raw outputs → values)."""

    model: ParAIsiteModel
    backbone: Backbone
    kind: TargetKind
    transform: Any


def model_from_checkpoint(source, ckpt: dict) -> RestoredModel:
    """Rebuild the model of a checkpoint; ``source`` is a Registry or a Context (anything with
    ``backbone(name)``). Fails with one line if the registered backbone's settings are not those the
    checkpoint was trained with."""
    fields = ckpt if "format" in ckpt else _fields_of_unnumbered(ckpt)
    bb = source.backbone(fields["backbone"])
    settings = fields.get("backbone_settings")
    if settings is not None and settings != bb.settings():
        raise UserError(f"checkpoint {ckpt.get('key', '')}: trained with {bb.name} settings {settings}, "
                        f"but the registered {bb.name} has {bb.settings()}")
    model = ParAIsiteModel(bb.build(), fields["representation_dim"], tuple(fields["head"]))
    model.load_state_dict(ckpt["model"], strict=True)
    model.eval()
    kind = target_kind(fields["target_kind"])
    return RestoredModel(model, bb, kind, kind.transform(fields["transform"]))


def _fields_of_unnumbered(ckpt: dict) -> dict:
    """The self-describing fields of a checkpoint written before they existed: the head's widths and the
    representation width from the head's Linear weights (out × in), the kind from ``transform_kind``."""
    linear = sorted((int(k.split(".")[2]), v.shape) for k, v in ckpt["model"].items()
                    if k.startswith("head.mlp.") and k.endswith(".weight"))
    if not linear:
        raise UserError(f"checkpoint {ckpt.get('key', '')} has no ParAIsite head weights: "
                        "it cannot be evaluated; delete it to retrain its stage")
    old_kind = ckpt.get("transform_kind", "log10p1")
    mean, std = ckpt["transform"]
    return {"backbone": ckpt["backbone"], "representation_dim": int(linear[0][1][1]),
            "head": [int(shape[0]) for _, shape in linear[:-1]],
            "target_kind": (REGRESSION_KIND if old_kind == "standardise" else KAPPA_KIND).name,
            "transform": {"mean": mean, "std": std}}
