"""The job graph: training stages (with their dependencies) and the cells they answer."""

from __future__ import annotations

from dataclasses import dataclass, field

from .backbone import Pretraining
from .context import Context
from .errors import UserError
from .leakage import decontamination
from .protocol import stable_hash, with_training_seed
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
    #: the training seed (the protocol's own unless ``--seeds K``)
    seed: int = 0


@dataclass
class Plan:
    stages: dict[str, StageSpec] = field(default_factory=dict)  # in dependency order
    cells: list[Cell] = field(default_factory=list)
    #: stage key -> test datasets to evaluate it on
    evals: dict[str, list[str]] = field(default_factory=dict)
    #: (backbone, strategy) pairs that cannot run, with the reason; ("baseline", name, reason) for a
    #: baseline left out of some cells (:func:`paraisite_bench.baselines.plan_baselines`)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    #: test dataset -> the metrics its evaluations carry (its target kind's ``metric_names``)
    metrics: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: the run's train and test datasets (what decontaminated pretraining stages leave out)
    targets: list[str] = field(default_factory=list)
    #: baselines to compute on every (train, test, split) of ``cells`` (:mod:`paraisite_bench.baselines`)
    baselines: tuple[str, ...] = ()


def composition_only(ctx: Context, dataset: str) -> bool:
    """Whether ``dataset`` (or one component of a union) holds compositions only (no crystal structures)."""
    return any(ctx.registry.dataset(a).input_kind == "composition" for a in ctx.atomic_names(dataset))


def structures_missing(ctx: Context, datasets, who: str) -> str | None:
    """Why ``who`` (a model or baseline that needs crystal structures) cannot use one of ``datasets``
    (a composition-only dataset), or None."""
    for d in datasets:
        if composition_only(ctx, d):
            return (f"dataset {ctx.registry.dataset(d).name!r} has compositions only (no crystal structures) "
                    f"and {who}")
    return None


def input_mismatch(ctx: Context, backbone, datasets) -> str | None:
    """Why ``backbone`` cannot use one of ``datasets`` (a structure backbone on a composition-only
    dataset), or None."""
    if backbone.input_kind != "structure":
        return None
    return structures_missing(ctx, datasets, f"{backbone.name} is a structure backbone")


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
    if options.get("recipe"):  # the recipe's code decides the stage's result like the backbone's
        contributors.append(("recipe", options["recipe"]))
    rules = [ctx.split_rule(a) for a in atoms]
    key = stable_hash({
        "backbone": bb.name, "settings": bb.settings(), "init": str(init), "parent": parent,
        "dataset": dataset, "data": [ctx.dataset(a).fingerprint for a in atoms],
        "split": split, "options": options, "plugins": ctx.registry.identities(contributors),
        # only for datasets that follow another's splits, so that the built-ins' keys are unchanged
        **({"split_rules": rules} if any(rules) else {}),
    })
    if key not in plan.stages:
        plan.stages[key] = StageSpec(key=key, backbone=bb.name, init=init, parent=parent, dataset=dataset,
                                     split=split, options=options, label=label)
    return key


@dataclass(frozen=True)
class ChainStage:
    """A stage of a strategy's chain for one backbone: its init (source resolved) and dataset; ``pretraining``
    is set on the stage that stands in for the published weights of a backbone that has none."""

    init: Init
    dataset: str
    pretraining: Pretraining | None = None


def pretraining_for(ctx: Context, bb) -> Pretraining | None:
    """The pretraining that stands in for ``bb``'s published weights: ``--pretraining``'s dataset for it, or
    the backbone's own default; None for a backbone with published weights or without a default."""
    chosen = dict(ctx.protocol.pretraining).get(bb.name)
    if bb.default_weights:
        if chosen:
            raise UserError(f"--pretraining {bb.name}={chosen}: {bb.name} has published weights "
                            f"({bb.default_weights}); --pretraining is for backbones without")
        return None
    own = bb.default_pretraining
    if chosen is None:
        return own
    dataset = ctx.registry.dataset(chosen).name
    if own is not None and own.dataset == dataset:
        return own
    return Pretraining(dataset, {}, f"chosen with --pretraining {bb.name}={chosen}")


def backbone_chain(ctx: Context, bb, strategy, target: str) -> list[ChainStage]:
    """``strategy``'s chain for ``target`` on backbone ``bb``, weights sources resolved. On a backbone without
    published weights, ``Init.weights("default")`` becomes its default pretraining followed by a stage that
    starts from it. Raises UserError when the backbone lacks the weights a stage names."""
    out = []
    pretraining = pretraining_for(ctx, bb)
    for st in strategy.chain(target):
        if st.init.kind == "weights" and st.init.source == "default" and pretraining is not None:
            out += [ChainStage(Init.random(), pretraining.dataset, pretraining),
                    ChainStage(Init.previous(), st.dataset)]
        else:
            out.append(ChainStage(resolved_init(bb, st.init), st.dataset))
    return out


def starting_point(ctx: Context, bb) -> str:
    """What ``Init.weights("default")`` (Steps 2 and 3) starts from on backbone ``bb``, in words (run.json,
    the report)."""
    if bb.default_weights:
        return (f"published weights {bb.default_weights!r} "
                f"({bb.weight_sources.get(bb.default_weights, 'no description')})")
    pre = pretraining_for(ctx, bb)
    if pre is None:
        return "nothing: no published weights and no default pretraining (Steps 2 and 3 are skipped)"
    options = ctx.protocol.training_options(pre.dataset, pre.options)
    how = ", ".join(f"{k} {options[k]}" for k in ("epochs", "batch_size", "lr", "recipe") if options.get(k))
    return (f"a stage trained from random weights on {ctx.registry.dataset(pre.dataset).label} ({how}; "
            f"split 0, shared by every split and target){': ' + pre.why if pre.why else ''}")


def _skip_reason(ctx: Context, bb, strategy) -> str | None:
    """Why a strategy cannot run on a backbone (published weights it does not have), or None."""
    try:
        backbone_chain(ctx, bb, strategy, "")
    except UserError as exc:
        return str(exc)
    return None


def training_seeds(protocol) -> list[int]:
    """The training seeds of each split: the protocol's seed, then seed + 1, … (``--seeds K``)."""
    return [protocol.seed + j for j in range(protocol.seeds)]


def stage_options(protocol, dataset: str, seed: int) -> dict:
    """A stage's options on ``dataset`` trained with ``seed`` (the protocol's own seed leaves them, and so the
    stage's key, as they are; another seed keeps the splits, see :func:`with_training_seed`)."""
    options = protocol.training_options(dataset)
    return options if seed == protocol.seed else with_training_seed(options, seed)


def _chain_stage_place(ctx: Context, st: ChainStage, ds: str, r: int, seed: int) -> tuple[int, dict, str]:
    """(split, options, label tag) of a chain's stage: a default pretraining is one stage for every split
    and seed (split 0, the protocol's seed, its own option defaults), like published weights."""
    if st.pretraining is not None:
        return 0, ctx.protocol.training_options(ds, st.pretraining.options), ""
    tag = f"#{r}" if seed == ctx.protocol.seed else f"#{r}s{seed}"
    return r, stage_options(ctx.protocol, ds, seed), tag


def _add_chain(plan: Plan, ctx: Context, bb, strategy, train: str, r: int, seed: int,
               test: list[str]) -> None:
    """The stages of one strategy's chain for target ``train``, split r and a training seed, and its cells;
    with ``--decontaminate``, the stages before the last leave out the records of every target of the run
    (``plan.targets``)."""
    reg = ctx.registry
    parent = None
    labels = []
    chain = backbone_chain(ctx, bb, strategy, train)
    for i, st in enumerate(chain):
        ds = reg.dataset(st.dataset).name
        labels.append(f"{st.init}>{ds}" if not labels else ds)
        split, options, tag = _chain_stage_place(ctx, st, ds, r, seed)
        last = i == len(chain) - 1
        deco = None if last else decontamination(ctx, ds, plan.targets, ctx.protocol.decontaminate)
        if deco:
            options = dict(options, decontaminate=deco)
        # a default pretraining is the same stage whichever strategy starts from it
        owner = None if st.pretraining else strategy.name
        parent = add_stage(plan, ctx, bb, st.init, parent, ds, split, options,
                           f"{bb.name}:{'>'.join(labels)}{tag}", owner)
    plan.evals.setdefault(parent, [])
    for te in test:
        if input_mismatch(ctx, bb, [te]):
            continue
        if te not in plan.evals[parent]:
            plan.evals[parent].append(te)
            plan.metrics[te] = reg.dataset(te).target.kind.metric_names
        plan.cells.append(Cell(bb.name, strategy.name, train, te, r, parent, ">".join(labels), seed))


def build_plan(ctx: Context, backbones, strategies, train, test, splits=None) -> Plan:
    """Expand backbones × strategies × train × splits × seeds into stages; stages with the same key
    (e.g. the AFLOW stage shared by every ``double`` job of a split) appear once. ``splits``: only these
    splits of the protocol (``run --only-splits``; their stages and keys are the full run's), else all."""
    reg = ctx.registry
    train = [reg.dataset(t).name for t in train]
    test = [reg.dataset(t).name for t in test]
    plan = Plan(targets=list(dict.fromkeys(train + test)))
    for b in backbones:
        bb = ctx.backbone(b)
        for s in strategies:
            strategy = reg.strategy(s)
            reason = _skip_reason(ctx, bb, strategy)
            if reason:
                plan.skipped.append((bb.name, strategy.name, reason))
                continue
            for t in train:
                if t in strategy.skip_targets:
                    continue
                datasets = [st.dataset for st in backbone_chain(ctx, bb, strategy, t)]
                mismatch = input_mismatch(ctx, bb, datasets)
                if mismatch:
                    if (bb.name, strategy.name, mismatch) not in plan.skipped:
                        plan.skipped.append((bb.name, strategy.name, mismatch))
                    continue
                for r in (range(ctx.protocol.splits) if splits is None else splits):
                    for seed in training_seeds(ctx.protocol):
                        _add_chain(plan, ctx, bb, strategy, t, r, seed, test)
    return plan


def check_splits(ctx: Context, plan: Plan) -> None:
    """Make every split the plan trains or evaluates on now, so that an unusable one (an empty side,
    e.g. a tiny dataset with --split-by formula) stops the command with one line before anything runs,
    rather than failing its jobs one by one."""
    for key, spec in plan.stages.items():
        ctx.split(spec.dataset, spec.split, spec.options)
        for test in plan.evals.get(key, []):
            ctx.split(test, spec.split, spec.options)
