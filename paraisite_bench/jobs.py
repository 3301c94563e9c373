"""The job graph: training stages (with their dependencies) and the cells they answer."""

from __future__ import annotations

from dataclasses import dataclass, field

from .context import Context
from .errors import UserError
from .protocol import stable_hash
from .strategy import Init
from .train import StageSpec


@dataclass(frozen=True)
class Cell:
    """One number of Table I for one split: (backbone, strategy, train, test, split) → a stage."""

    backbone: str
    strategy: str
    train: str
    test: str
    split: int
    stage_key: str
    chain: str


@dataclass
class Plan:
    stages: dict[str, StageSpec] = field(default_factory=dict)  # in dependency order
    cells: list[Cell] = field(default_factory=list)
    #: stage key -> test datasets to evaluate it on
    evals: dict[str, list[str]] = field(default_factory=dict)
    #: (backbone, strategy) pairs that cannot run, with the reason; ("baseline", name, reason) for a
    #: baseline left out of some cells (:func:`paraisite_bench.baselines.plan_baselines`)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    #: baselines to compute on every (train, test, split) of ``cells`` (:mod:`paraisite_bench.baselines`)
    baselines: tuple[str, ...] = ()


def composition_only(ctx: Context, dataset: str) -> bool:
    """Whether ``dataset`` (or one component of a union) holds compositions only (no crystal structures)."""
    return any(ctx.registry.dataset(a).input_kind == "composition" for a in ctx.atomic_names(dataset))


def input_mismatch(ctx: Context, backbone, datasets) -> str | None:
    """Why ``backbone`` cannot use one of ``datasets`` (a structure backbone on a composition-only
    dataset), or None."""
    if backbone.input_kind != "structure":
        return None
    for d in datasets:
        if composition_only(ctx, d):
            return (f"dataset {ctx.registry.dataset(d).name!r} has compositions only (no crystal structures) "
                    f"and {backbone.name} is a structure backbone")
    return None


def resolved_init(bb, init: Init) -> Init:
    """``init`` with its weights source resolved for backbone ``bb`` (``default`` → the backbone's own)."""
    return Init.weights(bb.resolve_source(init.source)) if init.kind == "weights" else init


def add_stage(plan: Plan, ctx: Context, bb, init: Init, parent: str | None, dataset: str, split: int,
              options: dict, label: str, strategy: str | None = None) -> str:
    """Key a training stage by everything that determines its result (backbone and its settings, init,
    parent stage, dataset and data checksums, split, options, and the identity of every plugin whose
    code contributes: the backbone's, the datasets' and the strategy's — distribution, version and, unless
    installed from a built wheel, a hash of its source, see :meth:`Registry.identity`), add it to ``plan``
    once, return its key. Stages with the same key are trained once and shared by every job that needs
    them. ``init`` has its source resolved (:func:`resolved_init`); the key hashes its string form."""
    atoms = ctx.atomic_names(dataset)
    contributors = [("backbone", bb.name), ("dataset", dataset), *(("dataset", a) for a in atoms)]
    if strategy:
        contributors.append(("strategy", strategy))
    key = stable_hash({
        "backbone": bb.name, "settings": bb.settings(), "init": str(init), "parent": parent,
        "dataset": dataset, "data": [ctx.dataset(a).fingerprint for a in atoms],
        "split": split, "options": options, "plugins": ctx.registry.identities(contributors),
    })
    if key not in plan.stages:
        plan.stages[key] = StageSpec(key=key, backbone=bb.name, init=init, parent=parent, dataset=dataset,
                                     split=split, options=options, label=label)
    return key


def build_plan(ctx: Context, backbones, strategies, train, test) -> Plan:
    """Expand backbones × strategies × train × splits into stages; stages with the same key
    (e.g. the AFLOW stage shared by every ``double`` job of a split) appear once."""
    reg = ctx.registry
    protocol = ctx.protocol
    plan = Plan()
    train = [reg.dataset(t).name for t in train]
    test = [reg.dataset(t).name for t in test]
    for b in backbones:
        bb = ctx.backbone(b)
        for s in strategies:
            strategy = reg.strategy(s)
            chain_probe = strategy.chain(train[0] if train else "")
            reason = None
            for st in chain_probe:
                if st.init.kind == "weights":
                    try:
                        bb.resolve_source(st.init.source)
                    except UserError as exc:
                        reason = str(exc)
            if reason:
                plan.skipped.append((bb.name, strategy.name, reason))
                continue
            for t in train:
                if t in strategy.skip_targets:
                    continue
                chain = strategy.chain(t)
                mismatch = input_mismatch(ctx, bb, [st.dataset for st in chain])
                if mismatch:
                    if (bb.name, strategy.name, mismatch) not in plan.skipped:
                        plan.skipped.append((bb.name, strategy.name, mismatch))
                    continue
                for r in range(protocol.splits):
                    parent = None
                    labels = []
                    for st in chain:
                        ds = reg.dataset(st.dataset).name
                        init = resolved_init(bb, st.init)
                        labels.append(f"{init}>{ds}" if not labels else ds)
                        parent = add_stage(plan, ctx, bb, init, parent, ds, r, protocol.training_options(ds),
                                           f"{bb.name}:{'>'.join(labels)}#{r}", strategy.name)
                    plan.evals.setdefault(parent, [])
                    for te in test:
                        if input_mismatch(ctx, bb, [te]):
                            continue
                        if te not in plan.evals[parent]:
                            plan.evals[parent].append(te)
                        plan.cells.append(Cell(bb.name, strategy.name, t, te, r, parent, ">".join(labels)))
    return plan
