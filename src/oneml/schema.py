"""The base of every config section: typed, frozen, unknown keys refused, errors as one line."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from oneml.errors import OnemlError, did_you_mean


class Section(BaseModel):
    """A config section. Field docstrings (``description``) are the ``--help`` text."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True)


def _render_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_validation_error(err: ValidationError, prefix: str = "", schema: type[BaseModel] | None = None) -> str:
    """One line for the first problem: ``method.r: must be a positive integer, got 0``."""
    first = err.errors()[0]
    inner = first.get("ctx", {}).get("error")
    if isinstance(inner, OnemlError):  # already one complete line (raised by a nested validation)
        return str(inner)
    # A key with a newline or control character (YAML allows them) is quoted, so that the error stays one line.
    loc = [str(p) if str(p).isprintable() else repr(str(p)) for p in first["loc"] if not str(p).startswith("function-")]
    where = ".".join(([prefix] if prefix else []) + loc) or prefix or "config"
    kind = first["type"]
    if kind == "extra_forbidden":
        known = _known_keys(schema, first["loc"][:-1]) if schema else []
        hint = did_you_mean(str(first["loc"][-1]), known) if known else ""
        allowed = f"; allowed: {', '.join(known)}" if known and not hint else ""
        return f"{where}: unknown key{hint}{allowed}"
    if kind == "missing":
        return f"{where}: required"
    msg = first["msg"]
    for strip in ("Value error, ", "Assertion failed, "):
        msg = msg.replace(strip, "")
    if kind in ("greater_than", "greater_than_equal") and first.get("ctx", {}).get("gt") == 0:
        declared = _field_type(schema, first["loc"]) if schema else None
        is_int = declared is int if declared is not None else isinstance(first.get("input"), int)
        msg = "must be a positive integer" if is_int else "must be a positive number"
    if kind == "literal_error":
        msg = "must be one of " + first["ctx"]["expected"]
    if "input" in first and ", got " not in msg:  # a validator's own message may already name the value
        msg = f"{msg}, got {_render_value(first.get('input'))}"
    return f"{where}: {msg}"


def _field_type(schema: type[BaseModel], loc: tuple) -> Any:
    """The declared type of the field at ``loc`` (``float`` for ``float | None``), or None when not found: the
    message must follow the field (a learning rate of -1 is not "a positive integer"), not the value typed."""
    model: Any = schema
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = field.annotation
    args = [a for a in getattr(model, "__args__", ()) if a is not type(None)]
    return args[0] if len(args) == 1 else model


def _known_keys(schema: type[BaseModel], loc: tuple) -> list[str]:
    model: Any = schema
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def validate(schema: type[BaseModel], data: Any, prefix: str = "") -> Any:
    """Validate ``data`` against ``schema``, turning pydantic's report into a one-line OnemlError."""
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise OnemlError(format_validation_error(err, prefix, schema)) from None


def describe_keys(
    schema: type[BaseModel], prefix: str = "", kinds: dict[str, Any] | None = None
) -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) for every leaf key. ``kinds`` maps a top-level section to the registry of its
    kinds (``method`` -> the method registry): such a section lists each registered kind's own keys."""
    kinds = kinds or {}
    rows: list[tuple[str, str, str, str]] = []
    for name, field in schema.model_fields.items():
        key = f"{prefix}{name}"
        if not prefix and name in kinds:
            for entry in kinds[name].entries():
                rows.append((f"{key}.name", "str", entry.name, entry.description))
                rows += [r for r in describe_keys(entry.value, f"{key}[{entry.name}].") if not r[0].endswith(".name")]
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += describe_keys(annotation, key + ".")
            continue
        default = field.get_default(call_default_factory=True) if not field.is_required() else "required"
        rows.append((key, _type_name(annotation), repr(default) if default != "required" else default,
                     field.description or ""))  # fmt: skip
        optional = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
        if len(optional) == 1 and isinstance(optional[0], type) and issubclass(optional[0], BaseModel):
            rows += describe_keys(optional[0], key + ".")  # an optional section (train.early_stopping): its keys too
    return rows


def _type_name(annotation: Any) -> str:
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_type_name(a) for a in args)}]"
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))
