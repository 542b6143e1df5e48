"""Tool argument schemas, kept valid on each side.

OpenAI and Anthropic take JSON Schema; Gemini's ``parameters`` takes an OpenAPI-style subset and
rejects unknown keywords (``$schema``, ``additionalProperties``, ``default``, ``$ref``...). Going to
Gemini the schema is reduced to that subset; coming from Gemini, its upper-case type names and
``nullable`` are turned back into JSON Schema.
"""

from __future__ import annotations

from typing import Any

_GEMINI_KEYWORDS = {
    "type",
    "format",
    "description",
    "nullable",
    "enum",
    "properties",
    "required",
    "items",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "anyOf",
    "title",
    "propertyOrdering",
}
_GEMINI_FORMATS = {"enum", "date-time", "int32", "int64", "float", "double"}


def object_schema(schema: Any) -> dict[str, Any]:
    """A tool's argument schema as an object schema (every dialect wants one)."""
    if not isinstance(schema, dict) or not schema:
        return {"type": "object", "properties": {}}
    if "type" not in schema and "properties" in schema:
        return {"type": "object", **schema}
    return schema


def to_gemini(schema: Any) -> dict[str, Any]:
    """JSON Schema -> Gemini's schema subset."""
    if not isinstance(schema, dict):
        return {}
    out: dict[str, Any] = {}
    type_ = schema.get("type")
    if isinstance(type_, list):
        kinds = [t for t in type_ if t != "null"]
        if len(kinds) < len(type_):
            out["nullable"] = True
        type_ = kinds[0] if len(kinds) == 1 else None
        if len(kinds) > 1:
            out["anyOf"] = [{"type": k} for k in kinds]
    if isinstance(type_, str):
        out["type"] = type_
    if schema.get("nullable") is True:
        out["nullable"] = True
    if "const" in schema and "enum" not in schema:
        out["enum"] = [str(schema["const"])]
    for key, value in schema.items():
        if key not in _GEMINI_KEYWORDS or key in ("type", "nullable"):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: to_gemini(sub) for name, sub in value.items()}
        elif key == "items":
            out[key] = to_gemini(value)
        elif key == "anyOf" and isinstance(value, list):
            out[key] = [to_gemini(sub) for sub in value]
        elif key == "enum" and isinstance(value, list):
            out[key] = [str(v) for v in value]
        elif key == "format" and value not in _GEMINI_FORMATS:
            continue
        else:
            out[key] = value
    if "required" in out and isinstance(out.get("properties"), dict):
        out["required"] = [name for name in out["required"] if name in out["properties"]]
    return out


def from_gemini(schema: Any) -> dict[str, Any]:
    """Gemini schema -> JSON Schema (lower-case types, ``nullable`` as a ``null`` type)."""
    if not isinstance(schema, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: from_gemini(sub) for name, sub in value.items()}
        elif key == "items":
            out[key] = from_gemini(value)
        elif key == "anyOf" and isinstance(value, list):
            out[key] = [from_gemini(sub) for sub in value]
        elif key not in ("nullable", "propertyOrdering"):
            out[key] = value
    if schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out
