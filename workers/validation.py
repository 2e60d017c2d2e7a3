"""Checks an answer must pass before a tier accepts it.

Each check is a small function with a name; it raises
:class:`~schemas.errors.InvalidOutput` whose ``check`` is that name, so the up-route event
says which check failed. The names are the fields of
:class:`~schemas.settings.ValidationSettings`, which switch each check on or off per tier:

==================  ==========================================================================
``empty``           the answer is empty or whitespace
``truncated``       the model stopped at its token limit (``finish_reason == "length"``)
``format``          the request asked for JSON and the answer does not parse, or does not
                    validate against the request's JSON Schema
``max_chars``       the answer is longer than the request's ``format.max_chars``
``refusal``         the answer opens with a refusal ("I can't help with that")
``hedging``         the answer opens with a hedge ("I'm not sure")
``over_explanation`` the answer is far longer than the request warrants
==================  ==========================================================================

Checks run in that order; the first failure wins. Example::

    validate_answer(completion.content, completion.finish_reason, scored.request,
                    settings.tier("fast").validation)
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema
import orjson
from jsonschema.exceptions import SchemaError as JSONSchemaError
from jsonschema.protocols import Validator

from schemas.errors import InvalidOutput
from schemas.messages import RouteRequest
from schemas.settings import ValidationSettings

__all__ = [
    "CHECKS",
    "HEDGING_MARKERS",
    "REFUSAL_MARKERS",
    "Answer",
    "validate_answer",
]

# Markers are matched, case-insensitively, in the opening of an answer only: a refusal or a
# hedge that opens an answer is what the model meant; the same words deep inside a long
# answer are usually quoted or incidental.
_OPENING_CHARS = 240

REFUSAL_MARKERS: tuple[str, ...] = (
    r"\bI(?:'m| am) sorry,? but I (?:can(?:'|no)t|am unable|won't)",
    r"\bI can(?:'|no)t (?:help|assist|provide|comply|do that|answer)",
    r"\bI(?:'m| am) (?:unable|not able) to (?:help|assist|provide|comply|answer)",
    r"\bI won't be able to (?:help|assist|provide|answer)",
    r"\bAs an AI(?: language model)?,? I (?:can(?:'|no)t|am unable|don't)",
    r"\bI must decline\b",
)

HEDGING_MARKERS: tuple[str, ...] = (
    r"\bI(?:'m| am) not (?:sure|certain)\b",
    r"\bI do(?:n't| not) know\b",
    r"\bI(?:'m| am) unsure\b",
    r"\bit(?:'s| is) hard to say\b",
    r"\bI can(?:'|no)t be (?:sure|certain)\b",
    r"\bI may be wrong\b",
    r"\bI(?:'m| am) not confident\b",
)

_REFUSAL = re.compile("|".join(REFUSAL_MARKERS), re.IGNORECASE)
_HEDGING = re.compile("|".join(HEDGING_MARKERS), re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Answer:
    """What a check looks at: the answer, why the model stopped, and the request."""

    content: str
    finish_reason: str | None
    request: RouteRequest
    settings: ValidationSettings


def _check_empty(answer: Answer) -> None:
    if not answer.content.strip():
        raise InvalidOutput("empty", "the answer is empty")


def _check_truncated(answer: Answer) -> None:
    if answer.finish_reason == "length":
        raise InvalidOutput(
            "truncated", f"the answer was cut at the token limit ({len(answer.content)} chars)"
        )


# Compiled JSON Schema validators by schema text: requests of one client reuse one schema.
_VALIDATORS: OrderedDict[bytes, Validator] = OrderedDict()
_VALIDATOR_CACHE_SIZE = 256


def _schema_validator(schema: dict[str, Any]) -> Validator:
    key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    validator = _VALIDATORS.get(key)
    if validator is not None:
        _VALIDATORS.move_to_end(key)
        return validator
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema)
    _VALIDATORS[key] = validator
    if len(_VALIDATORS) > _VALIDATOR_CACHE_SIZE:
        _VALIDATORS.popitem(last=False)
    return validator


def _check_format(answer: Answer) -> None:
    spec = answer.request.format
    if spec.kind == "plain":
        return
    try:
        value = orjson.loads(answer.content)
    except orjson.JSONDecodeError as exc:
        raise InvalidOutput("format", f"the answer is not JSON: {exc}") from None
    if spec.kind != "json_schema" or spec.json_schema is None:
        return
    try:
        validator = _schema_validator(spec.json_schema)
    except JSONSchemaError as exc:
        raise InvalidOutput(
            "format", f"the request's JSON Schema is invalid: {exc.message}"
        ) from None
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "<root>"
        raise InvalidOutput(
            "format", f"the answer does not match the JSON Schema at {where}: {error.message}"
        )


def _check_max_chars(answer: Answer) -> None:
    limit = answer.request.format.max_chars
    if limit is not None and len(answer.content) > limit:
        raise InvalidOutput(
            "max_chars", f"the answer has {len(answer.content)} chars, the limit is {limit}"
        )


def _check_refusal(answer: Answer) -> None:
    match = _REFUSAL.search(answer.content, 0, _OPENING_CHARS)
    if match is not None:
        raise InvalidOutput("refusal", f"the answer opens with a refusal ({match.group(0)!r})")


def _check_hedging(answer: Answer) -> None:
    match = _HEDGING.search(answer.content, 0, _OPENING_CHARS)
    if match is not None:
        raise InvalidOutput("hedging", f"the answer opens with a hedge ({match.group(0)!r})")


def _check_over_explanation(answer: Answer) -> None:
    settings = answer.settings
    asked = len(answer.request.prompt_text())
    chars = len(answer.content)
    if chars > settings.over_explanation_floor_chars and chars > (
        settings.over_explanation_ratio * asked
    ):
        raise InvalidOutput(
            "over_explanation",
            f"the answer has {chars} chars for a {asked}-char request "
            f"(limit: over {settings.over_explanation_floor_chars} chars and "
            f"{settings.over_explanation_ratio:g}x the request)",
        )


CHECKS: tuple[tuple[str, Callable[[Answer], None]], ...] = (
    ("empty", _check_empty),
    ("truncated", _check_truncated),
    ("format", _check_format),
    ("max_chars", _check_max_chars),
    ("refusal", _check_refusal),
    ("hedging", _check_hedging),
    ("over_explanation", _check_over_explanation),
)
"""Every check, in the order they run, by the name that switches it in ValidationSettings."""


def validate_answer(
    content: str,
    finish_reason: str | None,
    request: RouteRequest,
    settings: ValidationSettings,
) -> None:
    """Run the checks ``settings`` enables; raise :class:`InvalidOutput` at the first failure."""
    answer = Answer(content, finish_reason, request, settings)
    for name, check in CHECKS:
        if getattr(settings, name):
            check(answer)
