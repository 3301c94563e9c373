"""Plugin discovery: every backbone, dataset and strategy comes from the ``paraisite_bench``
entry-point group (built-ins included), or from modules passed in explicitly (tests, scripts)."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .backbone import Backbone
from .data import DatasetSpec
from .errors import UserError
from .strategy import Strategy

ENTRY_POINT_GROUP = "paraisite_bench"


@dataclass
class Registry:
    backbones: dict[str, type[Backbone]] = field(default_factory=dict)
    datasets: dict[str, DatasetSpec] = field(default_factory=dict)
    strategies: dict[str, Strategy] = field(default_factory=dict)
    #: (kind, name) -> plugin that provides it
    providers: dict[tuple[str, str], str] = field(default_factory=dict)
    #: (plugin, one-line error) for plugins that failed to load or register
    broken: list[tuple[str, str]] = field(default_factory=list)

    def _table(self, kind: str) -> dict:
        return {"backbone": self.backbones, "dataset": self.datasets, "strategy": self.strategies}[kind]

    def get(self, kind: str, name: str):
        table = self._table(kind)
        key = name.strip().lower()
        if key not in table:
            known = ", ".join(sorted(table)) or "none"
            plural = "strategies" if kind == "strategy" else f"{kind}s"
            raise UserError(f"unknown {kind} {name!r}: known {plural} are {known} "
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
    def register(obj: Any) -> None:
        name = str(getattr(obj, "name", "") or "").strip().lower()
        if kind == "backbone" and not (isinstance(obj, type) and issubclass(obj, Backbone)):
            raise TypeError(f"register_backbones expects a Backbone subclass, got {obj!r}")
        if kind == "dataset" and not isinstance(obj, DatasetSpec):
            raise TypeError(f"register_datasets expects a DatasetSpec, got {obj!r}")
        if kind == "strategy" and not isinstance(obj, Strategy):
            raise TypeError(f"register_strategies expects a Strategy, got {obj!r}")
        if not name:
            raise ValueError(f"{kind} registered without a name")
        table = reg._table(kind)
        if name in table:
            raise ValueError(f"{kind} {name!r} is already provided by plugin "
                             f"{reg.providers[(kind, name)]!r}")
        if kind != "backbone":
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
    for hook_name, kind in (("register_datasets", "dataset"), ("register_backbones", "backbone"),
                            ("register_strategies", "strategy")):
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            try:
                impl.function(register=_registrar(reg, kind, impl.plugin_name))
            except Exception as exc:
                reg.broken.append((impl.plugin_name, f"{hook_name}: {_one_line(exc)}"))
    return reg
