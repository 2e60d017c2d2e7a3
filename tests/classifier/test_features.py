"""render_request: the text the model reads, shared by training and runtime."""

from __future__ import annotations

import classifier_onnx
from classifier_onnx import CATEGORIES, MAX_RENDER_CHARS, render_request


def test_public_names() -> None:
    assert {"Scorer", "Score", "CATEGORIES", "render_request", "default_model_dir"} <= set(
        classifier_onnx.__all__
    )
    assert CATEGORIES == ("simple", "general", "reasoning", "code", "agent")


def test_plain_user_message_is_unchanged() -> None:
    text = render_request([{"role": "user", "content": "What are your store hours?"}])
    assert text == "What are your store hours?"


def test_tools_and_turn_become_a_prefix() -> None:
    messages = [{"role": "user", "content": "Look up order 42 via the orders API"}]
    assert render_request(messages, tools=3).startswith("[tools 3] ")
    assert render_request(messages, turn=4).startswith("[turn 4] ")
    assert "[tools" not in render_request(messages)


def test_turn_counts_user_messages_and_last_user_message_wins() -> None:
    messages = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "second question"},
    ]
    text = render_request(messages)
    assert text == "[turn 2] second question"


def test_system_prompt_is_short_and_marked() -> None:
    messages = [
        {"role": "system", "content": "You are a SQL expert. " * 50},
        {"role": "user", "content": "List all tables"},
    ]
    text = render_request(messages)
    assert text.startswith("[system] You are a SQL expert.")
    assert text.endswith("[user] List all tables")
    assert len(text) < 320


def test_content_parts_are_flattened() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "describe"},
                                     {"type": "image_url", "image_url": {"url": "x"}},
                                     {"type": "text", "text": "this image"}]},
    ]
    assert render_request(messages) == "describe this image"


def test_long_input_is_cut_keeping_both_ends() -> None:
    body = "start " + "word " * 20_000 + " the actual question?"
    text = render_request([{"role": "user", "content": body}])
    assert len(text) <= MAX_RENDER_CHARS + 5
    assert text.startswith("start word")
    assert text.endswith("the actual question?")


def test_empty_and_odd_messages_do_not_raise() -> None:
    assert render_request([]) == ""
    assert render_request([{"role": "assistant", "content": None}]) == ""
