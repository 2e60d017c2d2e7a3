"""Bytes on a topic ⇄ schema models, with errors a person can act on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from schemas.errors import SchemaError
from schemas.messages import (
    SCHEMA_VERSION,
    DeadLetter,
    RouteRequest,
    RouteResponse,
    ScoredRequest,
    UpRouteEvent,
)

__all__ = ["MESSAGE_MODELS", "decode", "encode", "export_json_schemas"]

M = TypeVar("M", bound=BaseModel)

MESSAGE_MODELS: dict[str, type[BaseModel]] = {
    "RouteRequest": RouteRequest,
    "ScoredRequest": ScoredRequest,
    "UpRouteEvent": UpRouteEvent,
    "RouteResponse": RouteResponse,
    "DeadLetter": DeadLetter,
}


def encode(message: BaseModel) -> bytes:
    """JSON bytes of a message, as every topic carries them."""
    return message.model_dump_json().encode()


def decode(model: type[M], data: bytes | None, *, max_bytes: int | None = None) -> M:
    """Parse and validate one message; raise :class:`SchemaError` saying what is wrong."""
    name = model.__name__
    if data is None:
        raise SchemaError("not_json", f"{name}: message has no value (tombstone)")
    if max_bytes is not None and len(data) > max_bytes:
        raise SchemaError(
            "too_large", f"{name}: message is {len(data)} bytes, the limit is {max_bytes}"
        )
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SchemaError("not_json", f"{name}: not valid UTF-8 JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise SchemaError("invalid", f"{name}: expected a JSON object, got {type(raw).__name__}")
    version = raw.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise SchemaError(
            "unknown_version",
            f"{name}: unknown schema_version {version!r}; this router reads {SCHEMA_VERSION}",
        )
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = [
            {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        summary = "; ".join(f"{e['loc'] or '<root>'}: {e['msg']}" for e in errors[:10])
        more = f" (+{len(errors) - 10} more)" if len(errors) > 10 else ""
        raise SchemaError("invalid", f"{name}: {summary}{more}", errors) from None


def export_json_schemas(directory: str | Path) -> list[Path]:
    """Write one JSON Schema file per message model, for producers in other languages."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in MESSAGE_MODELS.items():
        path = out / f"{name}.schema.json"
        schema = model.model_json_schema(mode="serialization")
        schema["$id"] = f"urn:llm-router:schema:v{SCHEMA_VERSION}:{name}"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
