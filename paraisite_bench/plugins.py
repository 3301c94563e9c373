"""Plugin discovery: every backbone, dataset, strategy, executor and report section comes from the
``paraisite_bench`` entry-point group (built-ins included), or from modules passed in explicitly
(``--plugin``, tests, scripts)."""

from __future__ import annotations

import dataclasses
import importlib.metadata
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
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


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
                pm.register(ep.load(), name=ep.name)
            except Exception as exc:  # a broken third-party plugin must not break the tool
                reg.broken.append((ep.name, _one_line(exc)))
    for module in modules:
        try:
            pm.register(module, name=getattr(module, "__name__", None))
        except Exception as exc:
            reg.broken.append((str(module), _one_line(exc)))
    for kind, (hook_name, _attr, _accepts) in KINDS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            try:
                impl.function(register=_registrar(reg, kind, impl.plugin_name))
            except Exception as exc:
                reg.broken.append((impl.plugin_name, f"{hook_name}: {_one_line(exc)}"))
    return reg
