"""Every message that crosses a topic, as versioned pydantic models.

Topic → model:

* ``llm.requests``    → :class:`RouteRequest` (written by producers)
* ``llm.tier.<name>`` → :class:`ScoredRequest` (written by the scoring and up-route agents)
* ``llm.uproute``     → :class:`UpRouteEvent` (written by tier workers)
* ``llm.responses``   → :class:`RouteResponse` (written by tier workers)
* ``llm.deadletter``  → :class:`DeadLetter` (written by any stage)

Example::

    request = RouteRequest(
        user_id="u-1",
        conversation_id="c-1",
        messages=[ChatMessage(role="user", content="What are your store hours?")],
    )
    payload = request.model_dump_json().encode()
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

__all__ = [
    "Attempt",
    "AttemptOutcome",
    "ChatMessage",
    "DeadLetter",
    "DeadLetterStage",
    "Features",
    "FormatSpec",
    "Identifier",
    "MAX_MESSAGES",
    "MAX_MESSAGE_CHARS",
    "RouteInfo",
    "RouteReason",
    "RouteRequest",
    "RouteResponse",
    "SCHEMA_VERSION",
    "ScoredRequest",
    "UpRouteCause",
    "UpRouteEvent",
    "Usage",
    "new_id",
    "utcnow",
]

SCHEMA_VERSION: Literal[1] = 1
MAX_MESSAGES = 256
MAX_MESSAGE_CHARS = 200_000
MAX_TOOLS = 128

Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$")
]
"""Ids of requests, users, tenants and conversations: 1-128 characters, no spaces."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]

Version = Literal[1]
RouteReason = Literal["forced", "score", "category", "depth", "latched", "history"]
AttemptOutcome = Literal[
    "ok", "timeout", "rate_limited", "upstream_error", "rejected", "invalid_output",
    "deadline_exceeded",
]
UpRouteCause = Literal["timeout", "rate_limited", "upstream_error", "rejected", "invalid_output"]
DeadLetterStage = Literal["ingest", "score", "uproute", "worker", "client"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChatMessage(_Message):
    """One chat message in OpenAI format."""

    role: Literal["system", "user", "assistant", "tool"]
    content: Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)]
    name: Name | None = None
    tool_call_id: Name | None = None


class FormatSpec(_Message):
    """What the answer must look like."""

    kind: Literal["plain", "json", "json_schema"] = "plain"
    json_schema: dict[str, Any] | None = None
    max_chars: int | None = Field(default=None, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _schema_matches_kind(self) -> FormatSpec:
        if self.kind == "json_schema" and not self.json_schema:
            raise ValueError("format kind 'json_schema' needs a 'json_schema'")
        if self.kind != "json_schema" and self.json_schema is not None:
            raise ValueError(f"format kind {self.kind!r} takes no 'json_schema'")
        return self


class RouteRequest(_Message):
    """A chat request as a producer publishes it to ``llm.requests``."""

    schema_version: Version = SCHEMA_VERSION
    id: Identifier = Field(default_factory=new_id)
    tenant_id: Identifier | None = None
    user_id: Identifier
    conversation_id: Identifier
    turn: int = Field(default=1, ge=1, le=100_000)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    tools: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_TOOLS)
    forced_tier: Name | None = None
    forced_model: Name | None = None
    format: FormatSpec = FormatSpec()
    max_output_tokens: int | None = Field(default=None, ge=1, le=100_000)
    deadline: AwareDatetime | None = None
    metadata: dict[Name, Annotated[str, StringConstraints(max_length=1024)]] = Field(
        default_factory=dict, max_length=64
    )
    created_at: AwareDatetime = Field(default_factory=utcnow)

    @model_validator(mode="after")
    def _has_user_message(self) -> RouteRequest:
        if not any(m.role == "user" for m in self.messages):
            raise ValueError("messages need at least one 'user' message")
        return self

    def prompt_text(self) -> str:
        """The last user message: what the request asks."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""


class Features(_Message):
    """Cheap features computed beside the classifier."""

    turn: int = 1
    chars: int = 0
    numbers: int = 0
    dates: int = 0
    entity_density: float = 0.0
    code: bool = False
    tools: int = 0
    user_outcomes: int = 0
    user_uproute_rate: float = 0.0


class Attempt(_Message):
    """One call of one tier's model for a request."""

    tier: Name
    model: Name
    outcome: AttemptOutcome
    error_kind: str | None = None
    detail: Annotated[str, StringConstraints(max_length=2000)] | None = None
    latency_ms: float = Field(default=0.0, ge=0)
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)
    worker_id: str | None = None
    started_at: AwareDatetime = Field(default_factory=utcnow)


class ScoredRequest(_Message):
    """A request with its score and route decision, on a tier topic."""

    schema_version: Version = SCHEMA_VERSION
    request: RouteRequest
    score: float = Field(ge=0, le=1)
    category: Name
    probabilities: dict[Name, float] = Field(default_factory=dict)
    confidence: float = Field(default=1.0, ge=0, le=1)
    features: Features = Features()
    tier: Name
    model: Name | None = None
    reason: RouteReason
    detail: str | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    scored_at: AwareDatetime = Field(default_factory=utcnow)

    @property
    def tiers_tried(self) -> list[str]:
        return [a.tier for a in self.attempts]


class Usage(_Message):
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class RouteInfo(_Message):
    """How a request was answered."""

    tier: Name
    model: Name
    category: Name
    score: float = Field(ge=0, le=1)
    reason: RouteReason
    tiers_tried: list[Name]
    attempts: list[Attempt]
    total_latency_ms: float = Field(ge=0)


class RouteResponse(_Message):
    """The accepted answer to a request, on ``llm.responses`` (key = request id)."""

    schema_version: Version = SCHEMA_VERSION
    request_id: Identifier
    conversation_id: Identifier
    user_id: Identifier
    content: str
    finish_reason: str | None = None
    usage: Usage = Usage()
    cost_usd: float = Field(default=0.0, ge=0)
    route: RouteInfo
    flagged: bool = False
    flag_reason: str | None = None
    created_at: AwareDatetime = Field(default_factory=utcnow)


class UpRouteEvent(_Message):
    """A tier could not answer; the up-route agent sends the request to the next tier."""

    schema_version: Version = SCHEMA_VERSION
    scored: ScoredRequest
    cause: UpRouteCause
    detail: str | None = None
    # The rejected answer, for invalid_output: kept for flagging and for learning.
    output: Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)] | None = None
    retry_after_s: float | None = Field(default=None, ge=0)
    created_at: AwareDatetime = Field(default_factory=utcnow)

    @property
    def request_id(self) -> str:
        return self.scored.request.id


class DeadLetter(_Message):
    """Something no stage could handle, kept whole so a person can find and replay it.

    ``original`` holds the payload bytes exactly as they arrived (base64 in JSON).
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64"
    )

    schema_version: Version = SCHEMA_VERSION
    stage: DeadLetterStage
    error_kind: str
    error: Annotated[str, StringConstraints(max_length=20_000)]
    original: bytes
    request_id: str | None = None
    conversation_id: str | None = None
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    source_key: str | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    tiers_tried: list[str] = Field(default_factory=list)
    created_at: AwareDatetime = Field(default_factory=utcnow)
