"""The AsyncAPI 3.0 document of every topic, generated from the pydantic message models.

One channel per topic (the requests topic, one per tier of the chain, up-route, responses,
dead letters), ``send``/``receive`` operations naming the component that performs them, the
message key of each topic and the headers every stage passes through. Payload schemas are the
models' JSON Schemas (serialization mode, as :func:`schemas.codec.export_json_schemas` writes
them), so the document cannot drift from the code: ``tests/deploy/test_asyncapi.py``
regenerates it and compares it with the checked-in ``deploy/asyncapi.yaml``.

Example::

    doc = build_asyncapi(Settings.load("router.yaml"))   # the deployment's topic names
    write_asyncapi("deploy/asyncapi.yaml")                # defaults: the checked-in file

``python -m deploy.asyncapi`` rewrites ``deploy/asyncapi.yaml``; ``llm-router schema asyncapi
PATH`` writes the document for the invocation's settings.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from deploy.replay import REPLAY_HEADER
from schemas.codec import MESSAGE_MODELS
from schemas.messages import SCHEMA_VERSION
from schemas.settings import Settings

__all__ = [
    "ASYNCAPI_VERSION",
    "CHECKED_IN",
    "asyncapi_export",
    "build_asyncapi",
    "default_settings",
    "render_asyncapi",
    "write_asyncapi",
]

ASYNCAPI_VERSION = "3.0.0"
CHECKED_IN = Path(__file__).resolve().parent / "asyncapi.yaml"
_KAFKA_BINDING = "0.5.0"
_SCHEMA_REF = "#/components/schemas/{model}"


def default_settings() -> Settings:
    """Settings from the defaults alone: no environment variables, no file."""
    # model_validate skips the settings sources, so the checked-in document does not depend
    # on the LLM_ROUTER_* variables of whoever regenerates it.
    return Settings.model_validate({})


def _key(description: str, example: str) -> dict[str, Any]:
    return {"type": "string", "description": description, "examples": [example]}


_CONVERSATION_KEY = _key(
    "Conversation id (UTF-8): every turn of a conversation lands on one partition, in order.",
    "c-1",
)
_REQUEST_KEY = _key("Request id (UTF-8): the key a client correlates the answer by.", "9f1c0e7a")
_DEADLETTER_KEY = _key(
    "The key of the message that failed (conversation id), or the request id when the "
    "up-route chain is exhausted; absent when the original had none.",
    "c-1",
)


def _headers() -> dict[str, Any]:
    return {
        "type": "object",
        "description": (
            "Kafka record headers, UTF-8 values. Every stage copies the headers of the message "
            "it consumed onto what it publishes, so a trace context set by the producer "
            "follows the request to its answer or dead letter."
        ),
        "properties": {
            "traceparent": {
                "type": "string",
                "description": "W3C Trace Context of the producer's span (optional).",
                "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                "examples": ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
            },
            "tracestate": {
                "type": "string",
                "description": "W3C Trace Context vendor state (optional).",
            },
            REPLAY_HEADER: {
                "type": "string",
                "description": (
                    "Set by `llm-router deadletter replay`: the dead letter this message "
                    "replays, as `<topic>:<partition>:<offset>`."
                ),
                "examples": ["llm.deadletter:2:1041"],
            },
        },
        "additionalProperties": {"type": "string"},
    }


def _payload_schemas() -> dict[str, Any]:
    """JSON Schemas of every message model, sharing one set of component definitions."""
    models: list[tuple[type[BaseModel], Any]] = [
        (model, "serialization") for model in MESSAGE_MODELS.values()
    ]
    _, top = models_json_schema(models, ref_template=_SCHEMA_REF)
    definitions: dict[str, Any] = top.get("$defs", {})
    return dict(sorted(definitions.items()))


def _message(name: str, summary: str, key: dict[str, Any]) -> dict[str, Any]:
    model = MESSAGE_MODELS[name]
    description = (model.__doc__ or "").strip().split("\n\n")[0]
    return {
        "name": name,
        "title": name,
        "summary": summary,
        "description": description,
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/Headers"},
        "payload": {"$ref": _SCHEMA_REF.format(model=name)},
        "bindings": {"kafka": {"key": key, "bindingVersion": _KAFKA_BINDING}},
    }


def build_asyncapi(settings: Settings) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document (a plain dict) for the topics of ``settings``."""
    topics = settings.topics
    router_group = settings.router.app_id

    def binding(topic: str, retention_ms: int) -> dict[str, Any]:
        return {
            "kafka": {
                "topic": topic,
                "partitions": topics.partitions,
                "replicas": topics.replication_factor,
                "topicConfiguration": {"retention.ms": retention_ms},
                "bindingVersion": _KAFKA_BINDING,
            }
        }

    def group(group_id: str) -> dict[str, Any]:
        return {
            "kafka": {
                "groupId": {"type": "string", "enum": [group_id]},
                "bindingVersion": _KAFKA_BINDING,
            }
        }

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    def channel(
        channel_id: str, topic: str, message: str, description: str, retention_ms: int
    ) -> None:
        channels[channel_id] = {
            "address": topic,
            "title": topic,
            "description": description,
            "messages": {message: {"$ref": f"#/components/messages/{message}"}},
            "bindings": binding(topic, retention_ms),
        }

    def operation(
        operation_id: str,
        action: str,
        channel_id: str,
        message: str,
        description: str,
        group_id: str | None = None,
    ) -> None:
        op: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": description,
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{message}"}],
        }
        if group_id is not None:
            op["bindings"] = group(group_id)
        operations[operation_id] = op

    retention = topics.retention_ms
    channel(
        "requests", topics.requests, "RouteRequest",
        "Chat requests from producers (any language; `llm-router schema export` writes the "
        "JSON Schema). Keyed by conversation id.",
        retention,
    )
    operation(
        "submitRequest", "send", "requests", "RouteRequest",
        "A producer (or `RouterClient.submit`) publishes a request.",
    )
    operation(
        "scoreRequest", "receive", "requests", "RouteRequest",
        "The router's scoring agent scores each request and routes it to a tier.",
        router_group,
    )
    for index, tier in enumerate(settings.chain):
        channel_id = f"tier.{tier}"
        name = tier[:1].upper() + tier[1:]
        channel(
            channel_id, topics.tier(tier), "ScoredRequest",
            f"Scored requests for the `{tier}` tier (position {index + 1} of the chain "
            f"{' → '.join(settings.chain)}), from the scoring agent and, after a failure "
            "on a cheaper tier, the up-route agent. Keyed by conversation id.",
            retention,
        )
        operation(
            f"route{name}", "send", channel_id, "ScoredRequest",
            f"The scoring or up-route agent sends a request to the `{tier}` tier.",
        )
        operation(
            f"answer{name}", "receive", channel_id, "ScoredRequest",
            f"The `{tier}` worker pool (`llm-router worker --tier {tier}`) calls its model.",
            f"{settings.router.app_id}-{tier}",
        )
    channel(
        "uproute", topics.uproute, "UpRouteEvent",
        "A tier could not answer (timeout, 429, 5xx, rejected or invalid output); the "
        "up-route agent sends the request to the next untried tier. Keyed by conversation id.",
        retention,
    )
    operation(
        "reportUpRoute", "send", "uproute", "UpRouteEvent",
        "A tier worker reports that its tier could not answer.",
    )
    operation(
        "upRoute", "receive", "uproute", "UpRouteEvent",
        "The router's up-route agent picks the next tier or dead-letters the request.",
        router_group,
    )
    channel(
        "responses", topics.responses, "RouteResponse",
        "Accepted answers with their whole route. Keyed by request id.",
        retention,
    )
    operation(
        "answer", "send", "responses", "RouteResponse",
        "A tier worker publishes an accepted (or, on the last tier, flagged) answer.",
    )
    operation(
        "receiveAnswer", "receive", "responses", "RouteResponse",
        "Clients (`RouterClient`) correlate answers by request id; the router's outcome "
        "feed updates its per-user and per-conversation tables.",
    )
    channel(
        "deadletter", topics.deadletter, "DeadLetter",
        "What no stage could handle, with the original bytes and the attempt history; "
        "`llm-router deadletter replay` republishes it.",
        topics.deadletter_retention_ms,
    )
    operation(
        "deadLetter", "send", "deadletter", "DeadLetter",
        "Any stage publishes what it cannot handle: bad input, an exhausted chain, a passed "
        "deadline.",
    )
    operation(
        "replayDeadLetter", "receive", "deadletter", "DeadLetter",
        "Operators read dead letters (`llm-router tail deadletter`) and replay them.",
    )

    schemas = _payload_schemas()
    schemas["Headers"] = _headers()
    messages = {
        "RouteRequest": _message("RouteRequest", "A chat request.", _CONVERSATION_KEY),
        "ScoredRequest": _message(
            "ScoredRequest", "A request with its score and tier.", _CONVERSATION_KEY
        ),
        "UpRouteEvent": _message(
            "UpRouteEvent", "A tier could not answer.", _CONVERSATION_KEY
        ),
        "RouteResponse": _message("RouteResponse", "An accepted answer.", _REQUEST_KEY),
        "DeadLetter": _message("DeadLetter", "A message no stage could handle.", _DEADLETTER_KEY),
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "llm-router topics",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": (
                "Every topic of the Kafka-native LLM request router and the JSON message on it. "
                "Generated from the pydantic models in `schemas/messages.py` by "
                "`deploy/asyncapi.py`; do not edit by hand. Every message carries "
                f"`schema_version: {SCHEMA_VERSION}`."
            ),
            "license": {
                "name": "Apache-2.0",
                "url": "https://www.apache.org/licenses/LICENSE-2.0",
            },
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": settings.kafka.bootstrap_servers.split(",")[0].strip(),
                "protocol": "kafka",
                "description": (
                    "The Kafka cluster (`kafka.bootstrap_servers`; security per "
                    "`kafka.security_protocol`)."
                ),
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render_asyncapi(settings: Settings) -> str:
    """The document as YAML text, byte for byte what :func:`write_asyncapi` writes."""
    body: str = yaml.safe_dump(
        build_asyncapi(settings), sort_keys=False, allow_unicode=True, width=100
    )
    header = (
        "# Generated by deploy/asyncapi.py from schemas/messages.py: do not edit.\n"
        "# Regenerate with `python -m deploy.asyncapi` (tests/deploy/test_asyncapi.py checks).\n"
    )
    return header + body


def write_asyncapi(path: str | Path = CHECKED_IN, settings: Settings | None = None) -> Path:
    """Write the document for ``settings`` (default: the defaults alone) to ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_asyncapi(settings or default_settings()), encoding="utf-8")
    return target


def asyncapi_export(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Where to write the YAML document.")],
    defaults: Annotated[
        bool,
        typer.Option(
            "--defaults",
            help="Use the default topic names, not this invocation's settings "
            "(what deploy/asyncapi.yaml holds).",
        ),
    ] = False,
) -> None:
    """Write the AsyncAPI 3.0 document of every topic to PATH."""
    from deploy.cli import settings_of

    settings = default_settings() if defaults else settings_of(ctx)
    typer.echo(str(write_asyncapi(path, settings)))


if __name__ == "__main__":
    sys.stdout.write(f"{write_asyncapi(sys.argv[1] if len(sys.argv) > 1 else CHECKED_IN)}\n")
