"""Arrow schemas of the contracts between stages (DESIGN.md, "Contracts")."""
from __future__ import annotations

import pyarrow as pa

from photogenic.filters.registry import Registry, builtin_registry

# What every reader yields: one row per pool sample, image bytes inline for the worker only.
POOL_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("caption", pa.string()),
        ("image", pa.large_binary()),  # null when missing or refused before reading
        ("source", pa.string()),  # where the bytes live: "TAR::MEMBER", "PARQUET::row=N" or a path
        ("shard", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("likes", pa.int64()),
        ("views", pa.int64()),
        ("meta", pa.string()),  # any other metadata, passed through untouched as JSON
        ("read_error", pa.string()),  # why the reader could not deliver the image, if so
    ]
)

# One score row per pool row, never dropped: these fixed columns, then every registered filter's
# columns (`filters.registry`; always-on filters first, then in declaration order), then the pool's
# pass-through columns. Columns of filters that did not run are null.
SCORE_HEAD = pa.schema(
    [
        ("key", pa.string()),
        ("caption", pa.string()),
        ("passed", pa.bool_()),
        ("reject_reason", pa.string()),  # "" when passed
        ("reject_detail", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("aspect", pa.float32()),  # from the header, for every row with a size (geometry declares it too)
        ("format", pa.string()),
        ("bytes", pa.int64()),
        ("sha256", pa.string()),
    ]
)
SCORE_TAIL = pa.schema(
    [
        ("likes", pa.int64()),
        ("views", pa.int64()),
        ("source", pa.string()),
        ("shard", pa.string()),
        ("meta", pa.string()),
    ]
)


# Fixed columns a filter may declare too (the cascade fills them whether or not it runs).
SHARED_COLUMNS = {"aspect"}  # geometry's


class SchemaConflict(ValueError):
    pass


def score_schema(registry: Registry) -> pa.Schema:
    """The score table of a run whose filters are `registry`'s (built-ins + its plugins)."""
    fixed = {f.name: f.type for f in (*SCORE_HEAD, *SCORE_TAIL)}
    extra = []
    for name, dtype in registry.columns().items():
        if name not in fixed:
            extra.append(pa.field(name, dtype))
        elif name not in SHARED_COLUMNS or fixed[name] != dtype:
            raise SchemaConflict(f"filter {owner(registry, name)!r} declares column {name!r}, which the score "
                                 f"table has of its own ({fixed[name]}): give it another name")
    return pa.schema([*SCORE_HEAD, *extra, *SCORE_TAIL])


def owner(registry: Registry, column: str) -> str:
    return next(cls.name for cls in registry if column in cls.columns)


def reject_reasons(registry: Registry) -> tuple[str, ...]:
    """Reject reasons in the order bad input is detected; model filters follow in declaration order."""
    return registry.reject_reasons()


SCORE_SCHEMA = score_schema(builtin_registry())
SCORE_COLUMNS = tuple(SCORE_SCHEMA.names)
REJECT_REASONS = reject_reasons(builtin_registry())
