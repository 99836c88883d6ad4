"""Load the artifact schemas from `schemas/*.yaml` and check tables against them on write."""

from __future__ import annotations

import functools
import importlib.resources
import re

import pyarrow as pa
import yaml

_SIMPLE = {
    "string": pa.string(), "binary": pa.binary(), "bool": pa.bool_(),
    "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
    "uint64": pa.uint64(), "float32": pa.float32(), "float64": pa.float64(),
}


def parse_type(text: str) -> pa.DataType:
    """Parse the small type language of the schema files: `int64`, `list<float32>`, `struct<a: string, b: int32>`."""
    text = text.strip()
    if text in _SIMPLE:
        return _SIMPLE[text]
    m = re.fullmatch(r"(list|struct)<(.*)>", text)
    if not m:
        raise ValueError(f"unknown type in schema file: {text!r}")
    kind, inner = m.groups()
    if kind == "list":
        return pa.list_(parse_type(inner))
    fields, depth, start = [], 0, 0
    for i, ch in enumerate(inner + ","):
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            name, _, typ = inner[start:i].partition(":")
            fields.append(pa.field(name.strip(), parse_type(typ)))
            start = i + 1
    return pa.struct(fields)


@functools.cache
def load(name: str) -> pa.Schema:
    """The Arrow schema of artifact `name` (file `schemas/<name>.yaml`)."""
    spec = yaml.safe_load(importlib.resources.files("mesodata.schemas").joinpath(f"{name}.yaml").read_text())
    fields = [
        pa.field(f["name"], parse_type(f["type"]), nullable=f.get("nullable", True),
                 metadata={"doc": f.get("doc", "")})
        for f in spec["fields"]
    ]
    return pa.schema(fields, metadata={"mesodata.artifact": name})


def conform(table: pa.Table, name: str) -> pa.Table:
    """Return `table` in the column order and types of schema `name`, or raise ValueError saying why."""
    schema = load(name)
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise ValueError(f"{name}: table lacks column(s) {missing}")
    table = table.select(schema.names)
    try:
        table = table.cast(schema)
    except (ValueError, pa.ArrowNotImplementedError) as exc:  # ArrowInvalid is a ValueError
        raise ValueError(f"{name}: {exc}") from exc
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            raise ValueError(f"{name}: column {field.name!r} must not hold nulls")
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **schema.metadata})
