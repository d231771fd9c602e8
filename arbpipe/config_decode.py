"""TOML tables to msgspec Structs with errors that name the full key path.

``convert(data, Struct, path)`` is ``msgspec.convert`` whose errors (``ConfigError``) start
with the offending key, dict keys included (``venues.okx.taker_fee_bps: expected float, got
str``; ``venues.okx.takerfee: unknown key``): msgspec names a location only within the
object it was given, so tables holding dicts are converted level by level. Used by
``arbpipe.config`` (the schema and its rules).
"""
from __future__ import annotations

import re
import typing

import msgspec


class ConfigError(ValueError):
    """Bad configuration; the message starts with the offending key path."""


def _has_dict(tp) -> bool:
    origin = typing.get_origin(tp)
    if origin is dict:
        return True
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_has_dict(a) for a in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        hints = typing.get_type_hints(tp)
        return any(_has_dict(hints[f]) for f in tp.__struct_fields__)
    return False


def join_key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(x) -> str:
    return {dict: "table", list: "array", str: "str", int: "int", float: "float",
            bool: "bool"}.get(type(x), type(x).__name__)


_MSG_RES = [
    (re.compile(r"^Object contains unknown field `(?P<k>[^`]*)`$"), "{path}: unknown key", True),
    (re.compile(r"^Object missing required field `(?P<k>[^`]*)`$"), "{path}: required key missing",
     True),
]


def _from_validation(e: msgspec.ValidationError, path: str) -> ConfigError:
    text = str(e)
    msg, _, loc = text.partition(" - at `")
    loc = loc.rstrip("`")
    sub = loc[1:] if loc.startswith("$") else loc    # ".x[2].y" or ""
    if sub.startswith("."):
        sub = sub[1:]
    full = path
    if sub:
        full = f"{path}.{sub}" if path and not sub.startswith("[") else f"{path}{sub}"
    for rx, fmt, with_key in _MSG_RES:
        m = rx.match(msg)
        if m:
            return ConfigError(fmt.format(path=join_key(full, m["k"]) if with_key else full))
    msg = msg.replace("`", "")
    if msg[:1].isupper():
        msg = msg[0].lower() + msg[1:]
    return ConfigError(f"{full or '(top level)'}: {msg}")


def convert(data, tp, path: str):
    """msgspec.convert with errors that name the full key path (dict keys included)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        structs = [a for a in args if isinstance(a, type) and issubclass(a, msgspec.Struct)]
        if structs and isinstance(data, dict):
            return convert(data, structs[0], path)
    if origin is dict:
        _kt, vt = typing.get_args(tp)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected table, got {_type_name(data)}")
        return {k: convert(v, vt, join_key(path, k)) for k, v in data.items()}
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        if not isinstance(data, dict):
            raise ConfigError(f"{path or '(top level)'}: expected table, got {_type_name(data)}")
        hints = typing.get_type_hints(tp)
        rest, later = dict(data), {}
        for f in tp.__struct_fields__:
            if f in rest and _has_dict(hints[f]):
                later[f] = convert(rest.pop(f), hints[f], join_key(path, f))
        try:
            obj = msgspec.convert(rest, tp)
        except msgspec.ValidationError as e:
            raise _from_validation(e, path) from None
        return msgspec.structs.replace(obj, **later) if later else obj
    try:
        return msgspec.convert(data, tp)
    except msgspec.ValidationError as e:
        raise _from_validation(e, path) from None
