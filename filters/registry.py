"""The filter registry: the built-in filters in cascade-declaration order, then plugins.

Everything that lists filters is built from here, from what each class declares (see
`filters.base.BaseFilter`): the `[filters]` config section (`pipeline.core.config`), the score
schema and reject reasons (`pipeline.core.schema`), the cascade and the report's histograms.

A plugin is a `BaseFilter` subclass named "module:Class", either in `[job] plugins` or as an
entry point of the `photogenic.filters` group (installed plugins are always registered; a
`[filters.NAME] enabled = false` table turns one off). The module must be importable wherever
the filter job runs, Spark workers included: installed there, or on their PYTHONPATH
(`spark.executorEnv.PYTHONPATH` for a cluster).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, model_validator

from photogenic.filters.base import BaseFilter, FilterConfig

ENTRY_POINT_GROUP = "photogenic.filters"

# Filters with a `[filters.NAME]` table, in cascade-declaration order (the order of their config
# tables, reject reasons and histograms; the cascade itself runs them by cost).
BUILTIN = (
    "photogenic.filters.caption:CaptionFilter",
    "photogenic.filters.geometry:GeometryFilter",
    "photogenic.filters.technical:TechnicalFilter",
    "photogenic.filters.offensive:OffensiveFilter",
    "photogenic.filters.ocr:OcrFilter",
    "photogenic.filters.clip:ClipFilter",
    "photogenic.filters.aesthetic:AestheticFilter",
    "photogenic.filters.concepts:ConceptFilter",
)
# Always on, no config table: select needs the perceptual hash of every row.
ALWAYS = ("photogenic.filters.hashes:PerceptualHashFilter",)

# The cascade's own reason for rows it cannot read (also any filter's crash on one image).
UNREADABLE = "unreadable"

_SPEC = re.compile(r"^(?P<module>[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_]\w*)$")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class PluginError(ValueError):
    """A plugin that cannot be imported or does not follow the filter protocol."""


# -- config sections -------------------------------------------------------------------------


class _PassThrough(FilterConfig):
    """The table of a filter that declares no config model: kept as given, checked against the
    constructor's signature so a wrong key fails when the config loads, not on a Spark worker."""

    model_config = ConfigDict(extra="allow")
    filter_class: ClassVar[type] = BaseFilter

    @model_validator(mode="after")
    def _fits_constructor(self) -> _PassThrough:
        try:
            inspect.signature(self.filter_class).bind(**(self.model_extra or {}))
        except TypeError as err:
            raise ValueError(f"{self.filter_class.__name__} does not take these settings: {err}") from None
        return self


def section_model(cls: type[BaseFilter]) -> type[BaseModel]:
    """The model of `[filters.NAME]` for a filter class: its own `Config`, made strict (unknown
    keys are errors) with an `enabled` switch, or a pass-through when it declares none."""
    model = cls.Config
    if model is FilterConfig:
        return type(f"{cls.__name__}Table", (_PassThrough,), {"filter_class": cls, "__module__": __name__})
    strict = model.model_config.get("extra") == "forbid"
    if strict and "enabled" in model.model_fields:
        return model
    namespace: dict[str, Any] = {"__module__": model.__module__, "model_config": ConfigDict(extra="forbid")}
    if "enabled" not in model.model_fields:
        namespace.update({"__annotations__": {"enabled": bool}, "enabled": True})
    return type(model.__name__, (model,), namespace)


def constructor_kwargs(section: BaseModel) -> dict[str, Any]:
    """A validated `[filters.NAME]` table as the filter's constructor arguments."""
    return section.model_dump(exclude={"enabled"})


# -- the registry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Registry:
    configurable: tuple[type[BaseFilter], ...]  # have a `[filters.NAME]` table; built-ins first
    always: tuple[type[BaseFilter], ...]
    plugins: tuple[str, ...] = ()  # "module:Class" of the plugins among `configurable`

    def __iter__(self) -> Iterator[type[BaseFilter]]:
        yield from self.configurable
        yield from self.always

    def get(self, name: str) -> type[BaseFilter]:
        for cls in self:
            if cls.name == name:
                return cls
        raise KeyError(f"no filter named {name!r} (registered: {', '.join(c.name for c in self)})")

    def sections(self) -> dict[str, type[BaseModel]]:
        """`[filters.NAME]` table models, in declaration order."""
        return {cls.name: section_model(cls) for cls in self.configurable}

    def columns(self) -> dict[str, pa.DataType]:
        """Every filter's score columns: always-on filters first, then in declaration order."""
        out: dict[str, pa.DataType] = {}
        for cls in (*self.always, *self.configurable):
            out.update(cls.columns)
        return out

    def reject_reasons(self) -> tuple[str, ...]:
        """`unreadable`, then each rejecting filter's reason in declaration order."""
        reasons = [UNREADABLE] + [cls.reject_reason for cls in self if cls.reject_reason]
        return tuple(dict.fromkeys(reasons))

    def histograms(self) -> dict[str, tuple[str, list[tuple[str, str]]]]:
        """Report histogram title -> (SQL expression, [(threshold label, config path)])."""
        return {h.title: (h.expr, [(label, f"filters.{cls.name}.{field}") for label, field in h.thresholds])
                for cls in self for h in cls.histograms}


def load_filter_class(spec: str, origin: str = "[job] plugins") -> type[BaseFilter]:
    """The class named by "module:Class", checked against the filter protocol."""
    match = _SPEC.match(spec) if isinstance(spec, str) else None
    if not match:
        raise PluginError(f"plugin {spec!r} ({origin}): expected 'module:Class', e.g. 'my_filters:WordFilter'")
    try:
        module = importlib.import_module(match["module"])
    except Exception as err:  # whatever the module raises while importing, say which plugin it was
        raise PluginError(f"plugin {spec!r} ({origin}): cannot import module {match['module']!r}: "
                          f"{type(err).__name__}: {err} (it must be importable here and on every Spark "
                          "worker: installed, or on PYTHONPATH)") from None
    cls = getattr(module, match["attr"], None)
    if cls is None:
        raise PluginError(f"plugin {spec!r} ({origin}): module {match['module']!r} has no {match['attr']!r}")
    if not (isinstance(cls, type) and issubclass(cls, BaseFilter)):
        raise PluginError(f"plugin {spec!r} ({origin}): {match['attr']} is not a subclass of "
                          "photogenic.filters.base.BaseFilter")
    _check_declarations(cls, spec)
    return cls


def _check_declarations(cls: type[BaseFilter], spec: str) -> None:
    where = f"plugin {spec!r}"
    if not isinstance(cls.name, str) or not _NAME.match(cls.name) or cls.name == BaseFilter.name:
        raise PluginError(f"{where}: `name` must be a lower-case identifier of its own (got {cls.name!r})")
    if cls.reject_reason is not None and not isinstance(cls.reject_reason, str):
        raise PluginError(f"{where}: `reject_reason` must be a string or None")
    if not isinstance(cls.columns, dict) or not all(
            isinstance(k, str) and isinstance(v, pa.DataType) for k, v in cls.columns.items()):
        raise PluginError(f"{where}: `columns` must map column names to pyarrow types")
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, BaseModel)):
        raise PluginError(f"{where}: `Config` must be a pydantic model class")


def _check_unique(classes: Iterable[type[BaseFilter]], specs: dict[type, str]) -> None:
    """Plugins must not take a name, reason, column or histogram another filter has."""
    seen: dict[str, dict[Any, str]] = {"name": {}, "reject reason": {UNREADABLE: "the cascade"},
                                       "column": {}, "histogram": {}}
    for cls in classes:
        owner = f"plugin {specs[cls]!r}" if cls in specs else f"filter {cls.name!r}"
        claims = [("name", cls.name), ("reject reason", cls.reject_reason)]
        claims += [("column", c) for c in cls.columns] + [("histogram", h.title) for h in cls.histograms]
        for kind, value in claims:
            if value is None:
                continue
            if value in seen[kind]:
                raise PluginError(f"{owner}: {kind} {value!r} is already taken by {seen[kind][value]}")
            seen[kind].setdefault(value, owner)


@lru_cache(maxsize=1)  # scanning every installed distribution costs ~30 ms
def entry_point_specs() -> tuple[str, ...]:
    """"module:Class" of every installed `photogenic.filters` entry point, by entry point name."""
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return tuple(ep.value for ep in sorted(found, key=lambda ep: ep.name))


@lru_cache(maxsize=None)
def _builtin_classes() -> tuple[tuple[type[BaseFilter], ...], tuple[type[BaseFilter], ...]]:
    def load(spec: str) -> type[BaseFilter]:
        module, attr = spec.split(":")
        return getattr(importlib.import_module(module), attr)

    return tuple(map(load, BUILTIN)), tuple(map(load, ALWAYS))


def builtin_registry() -> Registry:
    """The built-in filters only (what `Config()` knows without resolving plugins)."""
    configurable, always = _builtin_classes()
    return Registry(configurable, always)


@lru_cache(maxsize=64)
def _with_plugins(specs: tuple[tuple[str, str], ...]) -> Registry:
    base = builtin_registry()
    origin_of: dict[type, str] = {}
    plugins: list[type[BaseFilter]] = []
    for spec, origin in specs:
        cls = load_filter_class(spec, origin)
        if cls not in origin_of and cls not in base.configurable and cls not in base.always:
            origin_of[cls] = spec
            plugins.append(cls)
    _check_unique([*base, *plugins], origin_of)
    return Registry(base.configurable + tuple(plugins), base.always, tuple(origin_of[c] for c in plugins))


def resolve(plugins: Iterable[str] = (), entry_points: bool = True) -> Registry:
    """Built-ins plus the plugins named (`[job] plugins`) and, unless told not to, the installed
    entry points. Raises PluginError for a plugin that cannot be loaded."""
    specs = [(spec, "[job] plugins") for spec in plugins]
    if entry_points:
        specs += [(spec, f"entry point group {ENTRY_POINT_GROUP!r}") for spec in entry_point_specs()]
    if not specs:
        return builtin_registry()
    return _with_plugins(tuple(dict.fromkeys(specs)))


def clear_cache() -> None:
    """Forget resolved plugins and entry points (tests that install or change a plugin)."""
    _with_plugins.cache_clear()
    entry_point_specs.cache_clear()
