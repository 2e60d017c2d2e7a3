"""The checked-in AsyncAPI document matches the pydantic models and is valid AsyncAPI 3.0.0."""

from __future__ import annotations

import difflib

import jsonschema
import pytest
import yaml
from deploy_helpers import DEPLOY, vendored_schema

from deploy.asyncapi import CHECKED_IN, build_asyncapi, default_settings, render_asyncapi
from schemas.codec import MESSAGE_MODELS
from schemas.settings import Settings

REGENERATE = "regenerate it with `python -m deploy.asyncapi` and commit deploy/asyncapi.yaml"


def test_checked_in_document_matches_the_models() -> None:
    assert CHECKED_IN == DEPLOY / "asyncapi.yaml"
    expected = render_asyncapi(default_settings())
    actual = CHECKED_IN.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(
            list(
                difflib.unified_diff(
                    actual.splitlines(keepends=True), expected.splitlines(keepends=True),
                    "deploy/asyncapi.yaml (checked in)", "generated from schemas/", n=2,
                )
            )[:60]
        )
        pytest.fail(f"deploy/asyncapi.yaml is out of date: {REGENERATE}\n{diff}")


def test_document_is_valid_asyncapi_3() -> None:
    schema = vendored_schema("asyncapi-3.0.0.json")
    document = yaml.safe_load(CHECKED_IN.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors[:10]
    )


def test_validator_rejects_a_broken_document() -> None:
    # The vendored schema really checks operations: a 2.x-style action is an error.
    document = build_asyncapi(default_settings())
    document["operations"]["submitRequest"]["action"] = "publish"
    assert list(jsonschema.Draft7Validator(vendored_schema("asyncapi-3.0.0.json")).iter_errors(
        document
    ))


def test_one_channel_per_topic_with_payload_and_key() -> None:
    settings = Settings.model_validate({"topics": {"tier_prefix": "x.tier."}})
    document = build_asyncapi(settings)
    topics = settings.topics
    expected = {
        topics.requests, topics.uproute, topics.responses, topics.deadletter,
        *(topics.tier(t) for t in settings.chain),
    }
    assert {c["address"] for c in document["channels"].values()} == expected
    components = document["components"]
    assert set(components["messages"]) == set(MESSAGE_MODELS)
    for name, message in components["messages"].items():
        payload = components["schemas"][message["payload"]["$ref"].rsplit("/", 1)[1]]
        assert payload["title"] == name
        assert "key" in message["bindings"]["kafka"]
    assert "traceparent" in components["schemas"]["Headers"]["properties"]
    actions = {(op["channel"]["$ref"], op["action"]) for op in document["operations"].values()}
    for channel_id in document["channels"]:
        assert (f"#/channels/{channel_id}", "send") in actions
        assert (f"#/channels/{channel_id}", "receive") in actions
    groups = {
        op["bindings"]["kafka"]["groupId"]["enum"][0]
        for op in document["operations"].values()
        if "bindings" in op
    }
    assert groups == {"llm-router", *(f"llm-router-{t}" for t in settings.chain)}
