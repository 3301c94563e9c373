"""Plugin discovery: every backbone, dataset, strategy, executor, report section, baseline and training
recipe comes from the ``paraisite_bench`` entry-point group (built-ins included), or from modules passed in
explicitly (``--plugin``, tests, scripts)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import inspect
import json
import re
import sys
import types
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import pluggy

from . import hookspecs
from .backbone import Backbone
from .baseline import Baseline
from .data import DatasetSpec
from .errors import UserError
from .executors import Executor
from .recipe import Recipe
from .report import ReportSection
from .strategy import Strategy

ENTRY_POINT_GROUP = "paraisite_bench"


#: What each hook registers: kind -> (hook, table attribute of Registry, check of a registered object).
#: A hook added to ``hookspecs`` gets one line here and one table in :class:`Registry`.
KINDS: dict[str, tuple[str, str, Callable[[Any], bool]]] = {
    "dataset": ("register_datasets", "datasets", lambda o: isinstance(o, DatasetSpec)),
    "backbone": ("register_backbones", "backbones",
                 lambda o: isinstance(o, type) and issubclass(o, Backbone)),
    "strategy": ("register_strategies", "strategies", lambda o: isinstance(o, Strategy)),
    "executor": ("register_executors", "executors",
                 lambda o: isinstance(o, type) and issubclass(o, Executor)),
    "section": ("register_report_sections", "sections", lambda o: isinstance(o, ReportSection)),
    "baseline": ("register_baselines", "baselines",
                 lambda o: isinstance(o, type) and issubclass(o, Baseline)),
    "recipe": ("register_recipes", "recipes", lambda o: isinstance(o, type) and issubclass(o, Recipe)),
}


@dataclass
class Registry:
    backbones: dict[str, type[Backbone]] = field(default_factory=dict)
    datasets: dict[str, DatasetSpec] = field(default_factory=dict)
    strategies: dict[str, Strategy] = field(default_factory=dict)
    executors: dict[str, type[Executor]] = field(default_factory=dict)
    #: sections of report.html (render them in page order with ``report.ordered_sections``)
    sections: dict[str, ReportSection] = field(default_factory=dict)
    #: baseline classes (an unfitted instance: :meth:`baseline`)
    baselines: dict[str, type[Baseline]] = field(default_factory=dict)
    #: training recipe classes, named by a stage's ``options["recipe"]``
    recipes: dict[str, type[Recipe]] = field(default_factory=dict)
    #: (kind, name) -> plugin that provides it
    providers: dict[tuple[str, str], str] = field(default_factory=dict)
    #: (plugin, one-line error) for plugins that failed to load or register
    broken: list[tuple[str, str]] = field(default_factory=list)
    #: plugin -> (module holding its hooks, distribution of its entry point or None); see :meth:`identity`
    origins: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    def table(self, kind: str) -> dict:
        return getattr(self, KINDS[kind][1])

    def get(self, kind: str, name: str):
        table = self.table(kind)
        key = name.strip().lower()
        if key not in table:
            known = ", ".join(sorted(table)) or "none"
            raise UserError(f"unknown {kind} {name!r}: known {KINDS[kind][1]} are {known} "
                            "(see `paraisite-bench plugins`)")
        return table[key]

    def identity(self, kind: str, name: str) -> dict:
        """What identifies the code of the plugin that provides ``kind`` ``name``: the plugin's name, its
        distribution and version, and — unless it is installed from a built wheel (an editable install, a
        ``--plugin`` module with no distribution) — a hash of its source files. Part of every stage key and
        feature-cache key, so that changed plugin code never reuses old results. Computed once per
        plugin module per process (:func:`plugin_identity`)."""
        plugin = self.providers.get((kind, name.strip().lower()), "")
        module, dist = self.origins.get(plugin, (None, None))
        return {"plugin": plugin, **plugin_identity(module, dist)}

    def identities(self, items: Iterable[tuple[str, str]]) -> list[dict]:
        """The :meth:`identity` of each distinct plugin providing one of ``items`` ((kind, name) pairs),
        sorted by plugin name."""
        found = {}
        for kind, name in items:
            ident = self.identity(kind, name)
            found.setdefault(ident["plugin"], ident)
        return [found[p] for p in sorted(found)]

    def backbone(self, name: str) -> Backbone:
        return self.get("backbone", name)()

    def dataset(self, name: str) -> DatasetSpec:
        return self.get("dataset", name)

    def strategy(self, name: str) -> Strategy:
        return self.get("strategy", name)

    def baseline(self, name: str) -> Baseline:
        """A new, unfitted instance of baseline ``name``."""
        return self.get("baseline", name)()


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, pluggy.PluginValidationError):
        return _validation_line(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def _validation_line(exc: pluggy.PluginValidationError) -> str:
    """pluggy's three-line message as one line: which hook, what is wrong, what the hook takes."""
    text = str(exc)
    hook = re.search(r"for hook '(\w+)'", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    problem = lines[-1] if lines else text
    if hook is None:
        return f"invalid hook implementation: {problem}"
    name = hook.group(1)
    spec = getattr(hookspecs, name, None)
    takes = f"; {name} takes ({', '.join(inspect.signature(spec).parameters)})" if spec else \
        f" (unknown hook: the hooks are {', '.join(h for h, _a, _c in KINDS.values())})"
    return f"hook {name}: {problem}{takes}"


#: (module name, distribution) -> (its top-level package object, identity); a module imported again (a new
#: module object) is identified again
_IDENTITIES: dict[tuple[str, str | None], tuple[Any, dict]] = {}


def _module_name(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    return getattr(obj, "__module__", None) or type(obj).__module__


def source_hash(top: types.ModuleType) -> str | None:
    """sha256 of every ``.py`` file of package ``top`` (relative paths sorted, with their contents), or of
    the single module's file; None when it has no source on disk."""
    files: list[tuple[str, Path]] = []
    for root in getattr(top, "__path__", None) or ():
        root = Path(root)
        files += [(p.relative_to(root).as_posix(), p) for p in root.rglob("*.py")]
    if not files and getattr(top, "__file__", None) and Path(top.__file__).is_file():
        files = [(Path(top.__file__).name, Path(top.__file__))]
    if not files:
        return None
    digest = hashlib.sha256()
    for rel, path in sorted(files):
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _distribution(top: str, dist: str | None):
    if dist is None:
        names = importlib.metadata.packages_distributions().get(top) or []
        dist = sorted(names)[0] if names else None
    try:
        return importlib.metadata.distribution(dist) if dist else None
    except importlib.metadata.PackageNotFoundError:
        return None


def _editable(dist) -> bool:
    try:
        info = json.loads(dist.read_text("direct_url.json") or "{}")
    except (OSError, ValueError):
        return False
    return bool((info.get("dir_info") or {}).get("editable"))


def plugin_identity(module: str | None, dist: str | None = None) -> dict:
    """``{"distribution", "version", "source"}`` of the plugin whose hooks live in ``module``:
    the distribution (``dist``, that of its entry point, else the one that installed the module's
    top-level package) and its version, and the :func:`source_hash` of the top-level package when the
    distribution is an editable install or there is none (``source`` None for a built wheel)."""
    if not module:
        return {"distribution": None, "version": None, "source": None}
    top_name = module.split(".")[0]
    top = sys.modules.get(top_name)
    key = (module, dist)
    if key not in _IDENTITIES or _IDENTITIES[key][0] is not top:
        found = _distribution(top_name, dist)
        source = source_hash(top) if top is not None and (found is None or _editable(found)) else None
        _IDENTITIES[key] = (top, {"distribution": found.metadata["Name"] if found else None,
                                  "version": found.version if found else None, "source": source})
    return dict(_IDENTITIES[key][1])


def plugin_distributions(reg: Registry) -> dict[str, dict]:
    """plugin -> {"module", "distribution", "version"} of every registered plugin (its module mapped to its
    distribution with ``importlib.metadata``, :func:`plugin_identity`; "source": the hash of its source
    files when it is not installed from a built wheel); a module that no distribution provides (a
    ``--plugin`` module on the path) says so in "distribution" and has version None."""
    out = {}
    for plugin, (module, dist) in sorted(reg.origins.items()):
        ident = plugin_identity(module, dist)
        out[plugin] = {"module": module, "distribution": ident["distribution"]
                       or "none (a module on the path, not installed)",
                       "version": ident["version"], "source": ident["source"]}
    return out


def _registrar(reg: Registry, kind: str, plugin: str):
    hook, _attr, accepts = KINDS[kind]

    def register(obj: Any) -> None:
        name = str(getattr(obj, "name", "") or "").strip().lower()
        if not accepts(obj):
            raise TypeError(f"{hook} got {obj!r}, which is not a {kind} "
                            f"(see paraisite_bench.hookspecs.{hook})")
        if not name:
            raise ValueError(f"{kind} registered without a name")
        table = reg.table(kind)
        if name in table:
            raise ValueError(f"{kind} {name!r} is already provided by plugin "
                             f"{reg.providers[(kind, name)]!r}")
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            obj = replace(obj, name=name, plugin=plugin)
        table[name] = obj
        reg.providers[(kind, name)] = plugin

    return register


def load_registry(modules: Iterable[Any] = (), entry_points: bool = True) -> Registry:
    """Discover plugins and collect what they register. A plugin that fails is recorded in
    ``Registry.broken`` and the others still load."""
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    reg = Registry()
    if entry_points:
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if pm.get_plugin(ep.name) is not None:
                continue
            try:
                obj = ep.load()
                pm.register(obj, name=ep.name)
                reg.origins[ep.name] = (_module_name(obj), ep.dist.name if ep.dist else None)
            except Exception as exc:  # a broken third-party plugin must not break the tool
                reg.broken.append((ep.name, _one_line(exc)))
    for module in modules:
        try:
            name = pm.register(module, name=getattr(module, "__name__", None))
            reg.origins[name] = (_module_name(module), None)
        except Exception as exc:
            reg.broken.append((_module_name(module), _one_line(exc)))
    for kind, (hook_name, _attr, _accepts) in KINDS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            try:
                impl.function(register=_registrar(reg, kind, impl.plugin_name))
            except Exception as exc:
                reg.broken.append((impl.plugin_name, f"{hook_name}: {_one_line(exc)}"))
    return reg
