"""The plugin contract of paraisite-bench.

A plugin is any module registered under the ``paraisite_bench`` entry-point group, e.g. in its
``pyproject.toml``::

    [project.entry-points.paraisite_bench]
    my_backbone = "my_package.plugin"

and implementing one or more of the hooks below with :data:`paraisite_bench.hookimpl`.
The built-in backbones, datasets, strategies, executors, report sections, baselines and training recipes are
registered through this very group.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("paraisite_bench")


@hookspec
def register_backbones(register):
    """Register backbone classes: ``register(BackboneSubclass)``.

    A backbone (see :class:`paraisite_bench.backbone.Backbone`) featurises records, builds a torch
    module from random weights or from a named published-weights source, and returns its last
    hidden representation, on which the core puts the ParAIsite head. Runnable example::

        import torch
        from pymatgen.core import Composition

        from paraisite_bench import hookimpl
        from paraisite_bench.backbone import Backbone

        class MeanMass(Backbone):
            # composition only: mean atomic mass and number of elements, through one dense layer

            name = "meanmass"
            input_kind = "composition"
            representation_dim = 2

            def featurise(self, record):
                comp = Composition(record.formula)
                return torch.tensor([comp.weight / comp.num_atoms / 100.0, len(comp) / 4.0])

            def collate(self, features):
                return torch.stack(features)

            def build(self):
                return torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh())

        @hookimpl
        def register_backbones(register):
            register(MeanMass)
    """


@hookspec
def register_datasets(register):
    """Register datasets: ``register(DatasetSpec(...))``.

    A dataset provides validated records (id, formula, kappa, structure) plus a description and a
    citation (see :class:`paraisite_bench.data.DatasetSpec`). A dataset may also be the union of
    other datasets (``components=("dataset1", "dataset2")``): its split r is then the union of
    its components' splits r. A dataset made of another one's records declares
    ``subset_of="dataset1"``: its split r is then the parent's split r restricted to its ids, so that
    no record is trained on in one and tested on in the other (grouped splits, ``--split-by formula``,
    keep records together across datasets anyway). Runnable example::

        from pymatgen.core import Composition

        from paraisite_bench import hookimpl
        from paraisite_bench.data import DatasetSpec, read_ltc_json

        def load(ctx):
            _doc, records = read_ltc_json(ctx.path("ltc", "dataset1.json.gz"), "d1-halides")
            halogens = {"F", "Cl", "Br", "I"}
            return [r for r in records if halogens & {el.symbol for el in Composition(r.formula)}]

        @hookimpl
        def register_datasets(register):
            register(DatasetSpec(name="d1-halides", description="Dataset1's halides",
                                 citation="Seko et al., PRL 115, 205901 (2015)", loader=load,
                                 subset_of="dataset1"))
    """


@hookspec
def register_strategies(register):
    """Register transfer strategies: ``register(Strategy(name, stages=[...]))``.

    A strategy is a chain of training stages; each stage is (initialisation, dataset) where the
    initialisation of the first stage is ``Init.random()`` or ``Init.weights("<source>")`` and the
    dataset of the last stage is the run's target (``TARGET``). Runnable example::

        from paraisite_bench import hookimpl
        from paraisite_bench.strategy import Init, Stage, Strategy, TARGET

        @hookimpl
        def register_strategies(register):
            register(Strategy(
                name="double-mix",
                description="published weights -> MIX -> target",
                stages=(Stage(Init.weights("default"), "mix"), Stage(Init.previous(), TARGET)),
            ))
    """


@hookspec
def register_baselines(register):
    """Register baselines: ``register(BaselineSubclass)``; a run computes them all unless ``--baselines``.

    A baseline (see :class:`paraisite_bench.baseline.Baseline`) has no training stage: for every train ×
    test × split of a run it is fitted on split r's training records of the training dataset and predicts
    split r's test records of the test dataset, in the target's units; the core scores it like a trained
    model and stores the result (:mod:`paraisite_bench.baselines`). ``needs = "structure"`` skips it on
    datasets that hold compositions only. Runnable example::

        import numpy as np

        from paraisite_bench import hookimpl
        from paraisite_bench.baseline import Baseline

        class TrainingMean(Baseline):
            # the arithmetic mean of the training values, whatever the material

            name = "training-mean"
            description = "the mean of the training values"
            needs = "composition"

            def fit(self, records, target):
                self.value = float(np.mean([r.value for r in records]))
                return self

            def predict(self, records):
                return np.full(len(records), self.value)

        @hookimpl
        def register_baselines(register):
            register(TrainingMean)
    """

@hookspec
def register_executors(register):
    """Register executors (where jobs run): ``register(ExecutorSubclass)``, chosen with ``--executor NAME``.

    An executor (see :class:`paraisite_bench.executors.Executor`, whose docstring is the contract:
    what a task receives and returns, how checkpoints travel, how progress is reported, how shutdown
    and cancel work) runs the tasks the runner submits; it sets up its workers with
    :func:`paraisite_bench.worker.start` and runs each task with :func:`paraisite_bench.worker.run_task`.
    Runnable example::

        import concurrent.futures as cf
        import queue

        from paraisite_bench import hookimpl, worker
        from paraisite_bench.executors import Executor

        class ThreadExecutor(Executor):
            # one background thread of this process runs the tasks, one at a time

            name = "thread"
            description = "a background thread of this process"

            def __init__(self, setup, **kwargs):
                super().__init__(setup, **kwargs)
                self.epochs = queue.SimpleQueue()  # reported on the worker thread, delivered by poll()
                worker.start(setup, lambda *epoch: self.epochs.put(epoch), context=self.context)
                self.pool = cf.ThreadPoolExecutor(max_workers=1)

            def submit(self, task):
                return self.pool.submit(worker.run_task, task)

            def poll(self):
                while not self.epochs.empty():
                    self.on_epoch(*self.epochs.get())

            def shutdown(self, interrupted=False):
                self.pool.shutdown(wait=not interrupted, cancel_futures=True)
                worker.stop()

        @hookimpl
        def register_executors(register):
            register(ThreadExecutor)
    """


@hookspec
def register_report_sections(register):
    """Register sections of report.html: ``register(ReportSection(name, title, render, order=50))``.

    ``render(data)`` gets the :class:`paraisite_bench.results.ReportData` of the runs being reported
    (result rows, Table I, curves, stages, studies, run.json of each run) and returns an HTML fragment,
    or ``None`` to leave the section out; sections appear by ``order`` (Table I is 20, provenance 90)
    with an entry in the table of contents. Keep the page self-contained (no external URL); render a
    template of your package's ``templates/`` folder with
    ``paraisite_bench.report.fragment(name, package="my_package", ...)``, and figures with
    :func:`paraisite_bench.figures.to_svg` (see :mod:`paraisite_bench.report`). Detail too long for the
    page goes to CSV files beside report.html: ``ReportSection(..., tables=fn)``, ``fn(data)`` returning
    ``{"my_table.csv": rows}``, which the fragment names by file. Runnable example::

        from markupsafe import escape

        from paraisite_bench import hookimpl
        from paraisite_bench.report import ReportSection

        def slowest_stages(data):
            done = [s for s in data.stages if s.get("wall_s")]
            if not done:
                return None
            top = sorted(done, key=lambda s: -float(s["wall_s"]))[:3]
            items = "".join(f"<li>{escape(s['label'])}: {float(s['wall_s']):.1f} s</li>" for s in top)
            return f"<ol class='slowest'>{items}</ol>"

        @hookimpl
        def register_report_sections(register):
            register(ReportSection(name="slowest", title="Slowest training stages", render=slowest_stages,
                                   order=95))
    """


@hookspec
def register_recipes(register):
    """Register training recipes: ``register(RecipeSubclass)``, used by stages whose options say
    ``recipe=<name>`` (e.g. ``--stage-options dataset1:recipe=sgd-step``).

    A recipe (see :class:`paraisite_bench.recipe.Recipe`, whose docstring is the contract: what it is
    built from, when the loop calls it, how averaged weights enter epoch selection) owns a stage's
    optimiser, its learning-rate schedule and any weight averaging; the loss, the batches and the epoch
    selection stay the core's. A stage without ``recipe`` uses Adam with cosine annealing.
    Runnable example::

        import torch

        from paraisite_bench import hookimpl
        from paraisite_bench.recipe import Recipe

        class SGDStep(Recipe):
            # SGD with momentum 0.9 at the stage's lr, divided by 10 every 10 epochs

            name = "sgd-step"
            description = "SGD, momentum 0.9, lr / 10 every 10 epochs"

            def __init__(self, model, options, steps_per_epoch, loop, device):
                self.optimizer = torch.optim.SGD(model.parameters(), lr=options["lr"], momentum=0.9)
                self.schedule = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=10, gamma=0.1)

            def after_epoch(self, epoch, val_metric):
                self.schedule.step()

        @hookimpl
        def register_recipes(register):
            register(SGDStep)
    """
