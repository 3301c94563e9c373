"""Plugin discovery: every backbone, dataset, strategy, executor and report section comes from the
``paraisite_bench`` entry-point group (built-ins included), or from modules passed in explicitly
(``--plugin``, tests, scripts)."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

import pluggy

from . import hookspecs
from .backbone import Backbone
from .data import DatasetSpec
from .errors import UserError
from .executors import Executor
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
}


@dataclass
class Registry:
    backbones: dict[str, type[Backbone]] = field(default_factory=dict)
    datasets: dict[str, DatasetSpec] = field(default_factory=dict)
    strategies: dict[str, Strategy] = field(default_factory=dict)
    executors: dict[str, type[Executor]] = field(default_factory=dict)
    #: sections of report.html (render them in page order with ``report.ordered_sections``)
    sections: dict[str, ReportSection] = field(default_factory=dict)
    #: (kind, name) -> plugin that provides it
    providers: dict[tuple[str, str], str] = field(default_factory=dict)
    #: (plugin, one-line error) for plugins that failed to load or register
    broken: list[tuple[str, str]] = field(default_factory=list)
    #: plugin -> its module's name (every plugin that registered)
    modules: dict[str, str] = field(default_factory=dict)

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

    def backbone(self, name: str) -> Backbone:
        return self.get("backbone", name)()

    def dataset(self, name: str) -> DatasetSpec:
        return self.get("dataset", name)

    def strategy(self, name: str) -> Strategy:
        return self.get("strategy", name)


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


def _module_name(module: Any) -> str:
    return getattr(module, "__name__", None) or str(module)


def plugin_distributions(reg: Registry) -> dict[str, dict]:
    """plugin -> {"module", "distribution", "version"} of every registered plugin (its module mapped to its
    distribution with ``importlib.metadata``); a module that no distribution provides (a ``--plugin``
    module on the path) says so in "distribution" and has version None."""
    by_top = importlib.metadata.packages_distributions()
    out = {}
    for plugin, module in sorted(reg.modules.items()):
        dists = by_top.get(module.split(".")[0], [])
        if not dists:
            out[plugin] = {"module": module, "distribution": "none (a module on the path, not installed)",
                           "version": None}
            continue
        try:
            ver = importlib.metadata.version(dists[0])
        except importlib.metadata.PackageNotFoundError:
            ver = None
        out[plugin] = {"module": module, "distribution": dists[0], "version": ver}
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
                module = ep.load()
                pm.register(module, name=ep.name)
                reg.modules[ep.name] = _module_name(module)
            except Exception as exc:  # a broken third-party plugin must not break the tool
                reg.broken.append((ep.name, _one_line(exc)))
    for module in modules:
        try:
            pm.register(module, name=_module_name(module))
            reg.modules[_module_name(module)] = _module_name(module)
        except Exception as exc:
            reg.broken.append((_module_name(module), _one_line(exc)))
    for kind, (hook_name, _attr, _accepts) in KINDS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            try:
                impl.function(register=_registrar(reg, kind, impl.plugin_name))
            except Exception as exc:
                reg.broken.append((impl.plugin_name, f"{hook_name}: {_one_line(exc)}"))
    return reg
