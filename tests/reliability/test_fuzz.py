"""Bad input: hypothesis generates over 10,000 bad messages for the request topic.

Not JSON, JSON that is not an object, wrong types, missing fields, strings beyond
``router.max_request_bytes``, deep nesting, invalid UTF-8, unknown schema versions and forced
tiers that do not exist, interleaved with valid requests. The real router and worker pools
run as processes. Every bad message must end in the dead-letter topic with its original bytes
(compared exactly, matched by source partition and offset) and a reason, and every valid
request must be answered.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bench.harness import Stack, account, make_request, read_topic
from deploy.admin import kafka_client_kwargs
from schemas.codec import decode
from schemas.errors import SchemaError
from schemas.messages import DeadLetter, RouteRequest
from schemas.settings import Settings
from streams.client import RouterClient

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]

MAX_REQUEST_BYTES = 16_384
BATCH = 25
BATCHES = 420  # 10,500 bad messages
VALID_EVERY = 25  # one valid request after every 25 bad ones
CHAIN = ("fast", "balanced", "frontier")

# A few valid requests as JSON objects, the base of most mutations.
_BASES: list[dict[str, Any]] = [
    make_request(random.Random(seed)).model_dump(mode="json") for seed in range(8)
]

REQUIRED = ("user_id", "conversation_id", "messages")
identifiers = st.text(alphabet="abcdefghij0123456789-", min_size=1, max_size=16)


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits: the standard library writes them
        return json.dumps(value, ensure_ascii=False).encode()


@st.composite
def not_json(draw: st.DrawFn) -> tuple[str, bytes]:
    raw = draw(
        st.one_of(
            st.binary(max_size=300),
            st.text(max_size=300).map(str.encode),
            st.sampled_from([b"", b"{", b"}", b"{'a': 1}", b"NaN", b"{\"user_id\": }"]),
        ).filter(_not_json)
    )
    return "not_json", raw


def _not_json(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return True
    return False


@st.composite
def not_an_object(draw: st.DrawFn) -> tuple[str, bytes]:
    value = draw(
        st.one_of(
            st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
            st.text(max_size=50), st.lists(st.integers(), max_size=5),
        )
    )
    return "not_an_object", _dumps(value)


wrong_values: dict[str, st.SearchStrategy[Any]] = {
    "user_id": st.one_of(st.integers(), st.lists(st.integers(), max_size=3), st.none(),
                         st.booleans(), st.just("has space"), st.just("")),
    "conversation_id": st.one_of(st.integers(), st.dictionaries(identifiers, st.integers(),
                                                                max_size=2), st.none()),
    "messages": st.one_of(st.text(max_size=20), st.integers(), st.none(), st.just([]),
                          st.dictionaries(identifiers, st.text(max_size=5), max_size=2)),
    "turn": st.one_of(st.text(alphabet="abcxyz", min_size=1, max_size=5),
                      st.lists(st.integers(), max_size=2), st.none(),
                      st.integers(max_value=0), st.integers(min_value=100_001)),
    "format": st.one_of(st.text(max_size=5), st.integers(), st.just({"kind": "xml"})),
    "metadata": st.one_of(st.lists(st.text(max_size=3), max_size=2), st.text(max_size=5),
                          st.just({"k": 1})),
    "tools": st.one_of(st.text(max_size=5), st.integers(), st.just({"a": 1})),
    "created_at": st.just("yesterday"),
    "max_output_tokens": st.one_of(st.integers(max_value=0), st.text(alphabet="xyz",
                                                                      min_size=1)),
}


@st.composite
def wrong_type(draw: st.DrawFn) -> tuple[str, bytes]:
    base = dict(draw(st.sampled_from(_BASES)))
    name = draw(st.sampled_from(sorted(wrong_values)))
    base[name] = draw(wrong_values[name])
    if draw(st.booleans()):
        # ... or inside a message.
        message = dict(base["messages"][0]) if isinstance(base.get("messages"), list) and \
            base["messages"] else {"role": "user", "content": "hi"}
        if draw(st.booleans()):
            message["role"] = draw(st.one_of(st.integers(), st.none(), st.just("robot")))
        else:
            message["content"] = draw(st.one_of(st.integers(), st.none(),
                                                st.lists(st.integers(), max_size=3)))
        base["messages"] = [message]
    return "wrong_type", _dumps(base)


@st.composite
def missing_field(draw: st.DrawFn) -> tuple[str, bytes]:
    base = dict(draw(st.sampled_from(_BASES)))
    for name in draw(st.sets(st.sampled_from(REQUIRED), min_size=1)):
        del base[name]
    return "missing_field", _dumps(base)


@st.composite
def huge_string(draw: st.DrawFn) -> tuple[str, bytes]:
    base = dict(draw(st.sampled_from(_BASES)))
    size = draw(st.integers(MAX_REQUEST_BYTES, 4 * MAX_REQUEST_BYTES))
    char = draw(st.sampled_from("aé€😀"))
    field = draw(st.sampled_from(["content", "user_id", "extra"]))
    text = char * size
    if field == "content":
        base["messages"] = [{"role": "user", "content": text}]
    else:
        base[field] = text
    return "huge_string", _dumps(base)


@st.composite
def deep_nesting(draw: st.DrawFn) -> tuple[str, bytes]:
    depth = draw(st.integers(50, 5000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    nested = opener * depth + "1" + closer * depth
    where = draw(st.sampled_from(["top", "metadata", "content", "extra"]))
    if where == "top":
        return "deep_nesting", nested.encode()
    base = _dumps(draw(st.sampled_from(_BASES)))
    field = {"metadata": "metadata", "content": "messages", "extra": "nested"}[where]
    base_obj = orjson.loads(base)
    base_obj.pop(field, None)
    prefix = _dumps(base_obj)[:-1]  # drop the closing brace
    return "deep_nesting", prefix + f',"{field}":{nested}}}'.encode()


@st.composite
def invalid_utf8(draw: st.DrawFn) -> tuple[str, bytes]:
    bad = draw(st.sampled_from([b"\xff", b"\xfe\xfe", b"\xc3\x28", b"\xed\xa0\x80",
                                b"\xf0\x28\x8c\x28", b"\x80"]))
    base = _dumps(draw(st.sampled_from(_BASES)))
    field = draw(st.sampled_from([b'"user_id":"', b'"content":"', b'"conversation_id":"']))
    at = base.find(field)
    cut = at + len(field)
    return "invalid_utf8", base[:cut] + bad + base[cut:]


@st.composite
def unknown_version(draw: st.DrawFn) -> tuple[str, bytes]:
    base = dict(draw(st.sampled_from(_BASES)))
    base["schema_version"] = draw(
        st.one_of(st.integers().filter(lambda v: v != 1), st.text(max_size=5), st.none(),
                  st.floats(allow_nan=False).filter(lambda v: v != 1))
    )
    return "unknown_version", _dumps(base)


@st.composite
def wrong_forced_tier(draw: st.DrawFn) -> tuple[str, bytes]:
    base = dict(draw(st.sampled_from(_BASES)))
    base["id"] = draw(st.uuids()).hex
    base["forced_tier"] = draw(
        st.text(min_size=1, max_size=40).filter(lambda t: t not in CHAIN)
    )
    return "wrong_forced_tier", _dumps(base)


bad_message = st.one_of(
    not_json(), not_an_object(), wrong_type(), missing_field(), huge_string(),
    deep_nesting(), invalid_utf8(), unknown_version(), wrong_forced_tier(),
)


def is_bad(kind: str, raw: bytes) -> bool:
    """Whether the router must refuse ``raw``: it does not decode, or names no real tier."""
    try:
        request = decode(RouteRequest, raw, max_bytes=MAX_REQUEST_BYTES)
    except SchemaError:
        return True
    return kind == "wrong_forced_tier" and request.forced_tier not in CHAIN


def generate_bad_messages() -> list[tuple[str, bytes]]:
    """Batches drawn by hypothesis: ``BATCHES`` examples of ``BATCH`` bad messages each."""
    out: list[tuple[str, bytes]] = []

    @settings(
        max_examples=BATCHES, database=None, deadline=None, derandomize=True,
        phases=[Phase.generate], suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(bad_message, min_size=BATCH, max_size=BATCH))
    def collect(batch: list[tuple[str, bytes]]) -> None:
        for kind, raw in batch:
            assert is_bad(kind, raw), (kind, raw[:200])
        out.extend(batch)

    collect()
    return out


async def test_every_bad_message_is_dead_lettered_and_valid_traffic_is_answered(
    stack_settings: Callable[..., Settings], stacks: Callable[..., Stack]
) -> None:
    messages = await asyncio.to_thread(generate_bad_messages)
    assert len(messages) >= 10_000
    kinds = Counter(kind for kind, _ in messages)
    assert set(kinds) == {
        "not_json", "not_an_object", "wrong_type", "missing_field", "huge_string",
        "deep_nesting", "invalid_utf8", "unknown_version", "wrong_forced_tier",
    }
    assert min(kinds.values()) >= 300, kinds
    settings = stack_settings(
        router={"max_request_bytes": MAX_REQUEST_BYTES, "batch_max": 256, "batch_within_ms": 20}
    )
    stack = stacks(settings)
    rng = random.Random(11)

    async def scenario() -> None:
        async with stack:
            client = RouterClient(settings)
            await asyncio.wait_for(client.start(), 60)
            try:
                await _run(settings, stack, client, messages, rng)
            finally:
                await client.stop()

    await asyncio.wait_for(scenario(), 360)


async def _run(
    settings: Settings, stack: Stack, client: RouterClient, messages: list[tuple[str, bytes]],
    rng: random.Random,
) -> None:
    topics = settings.topics
    # The stack answers before the flood starts.
    warm = make_request(rng)
    await asyncio.wait_for(client.submit(warm), 30)
    await client.result(warm.id, timeout_s=120)

    producer = AIOKafkaProducer(
        **kafka_client_kwargs(settings.kafka), acks="all", linger_ms=5,
        max_request_size=1_048_576,
    )
    await asyncio.wait_for(producer.start(), 30)
    sent: dict[tuple[int, int], tuple[str, bytes]] = {}
    valid: list[RouteRequest] = []
    try:
        pending = []
        for number, (kind, raw) in enumerate(messages):
            key = rng.choice([None, f"c-{rng.randrange(100)}".encode()])
            pending.append(((kind, raw), await producer.send(topics.requests, raw, key=key)))
            if number % VALID_EVERY == VALID_EVERY - 1:
                request = make_request(rng)
                valid.append(request)
                await client.submit(request)
        for (kind, raw), future in pending:
            metadata = await asyncio.wait_for(future, 60)
            sent[(metadata.partition, metadata.offset)] = (kind, raw)
    finally:
        await producer.stop()

    # Every valid request is answered while the bad ones go by.
    results = await asyncio.gather(
        *(client.result(r.id, timeout_s=240) for r in valid), return_exceptions=True
    )
    failed = [(r.id, repr(x)) for r, x in zip(valid, results, strict=True)
              if isinstance(x, BaseException)]
    assert not failed, failed[:10]

    async def dead_letters() -> dict[tuple[int, int], DeadLetter]:
        found: dict[tuple[int, int], DeadLetter] = {}
        for record in await read_topic(settings, [topics.deadletter]):
            letter = decode(DeadLetter, record.value)
            if letter.source_topic == topics.requests:
                assert letter.source_partition is not None and letter.source_offset is not None
                found[(letter.source_partition, letter.source_offset)] = letter
        return found

    async def all_dead_lettered() -> dict[tuple[int, int], DeadLetter]:
        while True:
            found = await dead_letters()
            if set(sent) <= set(found):
                return found
            await asyncio.sleep(5.0)

    found = await asyncio.wait_for(all_dead_lettered(), 180)
    mismatched = []
    for where, (kind, raw) in sent.items():
        letter = found[where]
        if letter.original != raw or not letter.error or not letter.error_kind:
            mismatched.append((kind, where, letter.error_kind, letter.error[:100]))
        assert letter.stage == "ingest"
    assert not mismatched, mismatched[:10]

    by_kind = Counter(kind for kind, _ in sent.values())
    reasons = Counter(f"{letter.stage}/{letter.error_kind}" for letter in found.values())
    print(f"\nbad messages {len(sent)} by kind {dict(by_kind)}")
    print(f"dead letters by reason {dict(reasons)}; valid answered {len(valid)}/{len(valid)}")

    # No valid request was dead-lettered, and none was answered twice on the topics.
    accounting = await account(settings)
    valid_ids = {r.id for r in valid}
    assert valid_ids <= accounting.answered
    assert not valid_ids & set(accounting.dead_lettered)
    assert client.duplicates == 0 or accounting.topic_duplicates > 0
    assert not stack.crashes
