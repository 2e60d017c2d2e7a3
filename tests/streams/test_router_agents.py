"""The Faust agents through ``agent.test_context()`` and the stages with a fake sink."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner
from faust.types import TP
from router_helpers import FakeScorer, FakeSink, request

from schemas.codec import decode, encode
from schemas.messages import Attempt, DeadLetter, RouteInfo, RouteResponse, ScoredRequest
from schemas.messages import UpRouteEvent as Event
from schemas.settings import Settings
from streams import (
    ConversationState,
    Outcome,
    OutcomeFeed,
    OutcomeLedger,
    Record,
    RouterApp,
    RouterMetrics,
    RouterState,
    ScoringStage,
    UpRouteStage,
    UserStats,
    build_app,
)
from streams.app import STALL_EXIT_CODE
from streams.outcomes import read_outcome
from streams.tables import default_partition


def close_unstarted(router: RouterApp) -> None:
    """test_context makes Faust build its consumer, whose thread owns a fresh event loop that
    only ``app.stop()`` of a started app would close: close it here."""
    consumer = router.app._consumer
    if consumer is not None:
        consumer._thread.thread_loop.close()


@pytest.fixture
def settings() -> Settings:
    return Settings(router={"app_id": "router-unit", "web_port": 0, "metrics_port": 0,
                            "batch_max": 8, "max_request_bytes": 2048})


async def test_score_agent_test_context(
    settings: Settings, fake_scorer: FakeScorer, fake_sink: FakeSink
) -> None:
    router = build_app(settings, scorer=fake_scorer, sink=fake_sink)
    good = [request(f"q [score={s}]", conversation="c-1") for s in (0.1, 0.5, 0.9)]
    async with router.score_agent.test_context() as agent:
        for req in good:
            await agent.put(encode(req), key=b"c-1", headers=[("traceparent", b"00-t-s-01")],
                            wait=False)
        await agent.put(b"{broken", key=b"k", wait=False)
        await fake_sink.wait_for(4)
    close_unstarted(router)
    tiers = fake_sink.on(settings.topics.tier("fast")) + fake_sink.on(
        settings.topics.tier("frontier"))
    scored = sorted((decode(ScoredRequest, s.value) for s in tiers), key=lambda s: s.score)
    # Turns count within the conversation; the third turn latches to frontier anyway.
    assert [s.features.turn for s in scored] == [1, 3]
    [mid] = fake_sink.on(settings.topics.tier("balanced"))
    assert decode(ScoredRequest, mid.value).features.turn == 2
    assert all(dict(s.headers)["traceparent"] == b"00-t-s-01" for s in tiers)
    [letter] = fake_sink.on(settings.topics.deadletter)
    dead = decode(DeadLetter, letter.value)
    assert (dead.stage, dead.error_kind, dead.original) == ("ingest", "not_json", b"{broken")
    assert router.state.conversation("c-1").turns == 3
    assert router.state.conversation("c-1").tier_index == 2


async def test_uproute_agent_test_context(settings: Settings, fake_sink: FakeSink) -> None:
    router = build_app(settings, scorer=FakeScorer(), sink=fake_sink)
    scored = ScoredRequest(request=request("x", user="u-9"), score=0.1, category="general",
                           tier="fast", reason="score", model="pinned",
                           attempts=[Attempt(tier="fast", model="m", outcome="timeout")])
    async with router.uproute_agent.test_context() as agent:
        await agent.put(encode(Event(scored=scored, cause="timeout")), wait=False)
        await agent.put(b"nope", wait=False)
        await fake_sink.wait_for(3)
    close_unstarted(router)
    [sent] = fake_sink.on(settings.topics.tier("balanced"))
    again = decode(ScoredRequest, sent.value)
    assert again.tier == "balanced" and again.model is None
    assert again.tiers_tried == ["fast"] and "up-routed to balanced" in (again.detail or "")
    assert sent.key == scored.request.conversation_id.encode()
    [letter] = fake_sink.on(settings.topics.deadletter)
    assert decode(DeadLetter, letter.value).stage == "uproute"
    # A first-tier up-route counts against the user: on the replica that owns the user.
    [counted] = fake_sink.on(settings.router.outcome_topic("user"))
    assert counted.key == b"u-9"
    assert decode(Outcome, counted.value).failed
    assert not fake_sink.on(settings.router.outcome_topic("conversation"))
    assert router.state.user("u-9").outcomes == 0   # not written by the uproute agent


def _response(tier: str, *, flagged: bool = False, conversation: str = "c-r") -> RouteResponse:
    return RouteResponse(
        request_id="r-1", conversation_id=conversation, user_id="u-r", content="ok",
        flagged=flagged,
        route=RouteInfo(tier=tier, model="m", category="general", score=0.1, reason="score",
                        tiers_tried=[tier], attempts=[], total_latency_ms=1.0),
    )


async def test_outcome_feed_keys_each_outcome_by_the_state_it_changes(
    settings: Settings,
) -> None:
    from streams import RoutePolicy

    sink = FakeSink()
    feed = OutcomeFeed(settings, RoutePolicy.from_settings(settings), sink)
    to_conversation = settings.router.outcome_topic("conversation")
    to_user = settings.router.outcome_topic("user")
    assert len(await feed.answered(_response("fast"))) == 2
    assert len(await feed.answered(_response("fast", flagged=True))) == 1   # user only
    assert len(await feed.answered(_response("frontier"))) == 1   # latch only
    assert len(await feed.answered(_response("frontier", flagged=True))) == 0
    assert await feed.record_response(Record(value=b"junk", topic="t")) == []  # logged
    assert [s.key for s in sink.on(to_conversation)] == [b"c-r", b"c-r"]
    assert [s.key for s in sink.on(to_user)] == [b"u-r", b"u-r"]
    assert [decode(Outcome, s.value).failed for s in sink.on(to_user)] == [False, True]
    assert len(sink.sent) == 4


def test_outcome_ledger_counts_and_latches(settings: Settings) -> None:
    from streams import RoutePolicy

    state = RouterState(conversations={}, users={})
    ledger = OutcomeLedger(RoutePolicy.from_settings(settings), state, clock=lambda: 100.0)

    def outcome(tier: str, *, failed: bool = False) -> Outcome:
        return Outcome(request_id="r-1", conversation_id="c-r", user_id="u-r", tier=tier,
                       failed=failed)

    for each in (outcome("fast"), outcome("fast", failed=True)):
        ledger.count(each)
        ledger.latch(each)
    assert (state.user("u-r").outcomes, state.user("u-r").uproutes) == (2, 1)
    ledger.count(outcome("frontier"))
    assert state.user("u-r").outcomes == 2  # only first-tier outcomes count
    ledger.latch(outcome("frontier"))
    assert state.conversation("c-r").tier_index == 2
    ledger.latch(outcome("balanced"))   # never lowers the latch
    ledger.latch(outcome("unknown-tier"))
    assert state.conversation("c-r") == ConversationState(turns=0, tier_index=2, seen_at=100.0)
    assert read_outcome(Record(value=b"junk", topic="t")) is None  # logged, skipped


def test_users_table_skips_its_own_stale_records(settings: Settings, fake_sink: FakeSink) -> None:
    """Every replica keeps reading the users changelog, the writer too: a record it wrote
    before its latest write arrives after it, and must not undo it."""
    from types import SimpleNamespace

    router = build_app(settings, scorer=FakeScorer(), sink=fake_sink)
    users = router.users
    assert users.is_global and users.use_partitioner and users.recovery_buffer_size == 1

    def record(key: str, value: dict[str, int] | None) -> SimpleNamespace:
        return SimpleNamespace(key=key, value=value,
                               message=SimpleNamespace(value=b"x" if value else None,
                                                       partition=0))

    users.data["u-1"] = {"outcomes": 3, "uproutes": 1}   # the writer's latest write
    users.apply_changelog_batch([record("u-1", {"outcomes": 2, "uproutes": 1})])
    assert router.state.user("u-1") == UserStats(3, 1)
    users.apply_changelog_batch([record("u-1", {"outcomes": 3, "uproutes": 1}),
                                 record("u-2", {"outcomes": 1, "uproutes": 0}),
                                 record("u-1", {"outcomes": 4, "uproutes": 2}),
                                 record("u-1", {"outcomes": 2, "uproutes": 0})])
    assert router.state.user("u-1") == UserStats(4, 2)
    assert router.state.user("u-2") == UserStats(1, 0)
    users.apply_changelog_batch([record("u-2", None)])   # a deletion always applies
    assert "u-2" not in users.data
    close_unstarted(router)


async def test_scoring_stage_dead_letters_when_classifier_fails(settings: Settings) -> None:
    class Broken:
        def score(self, texts: object) -> list[object]:
            raise RuntimeError("onnx exploded")

    sink = FakeSink()
    stage = ScoringStage(settings, scorer=Broken(), state=RouterState({}, {}), sink=sink,
                         metrics=RouterMetrics())
    req = request("hi")
    await stage.process([Record(value=encode(req), topic="req", partition=2, offset=7)])
    [letter] = sink.on(settings.topics.deadletter)
    dead = decode(DeadLetter, letter.value)
    assert (dead.stage, dead.error_kind, dead.request_id) == ("score", "RuntimeError", req.id)
    assert (dead.source_partition, dead.source_offset) == (2, 7)


async def test_scoring_stage_batches_into_one_call(
    settings: Settings, fake_scorer: FakeScorer
) -> None:
    sink = FakeSink()
    stage = ScoringStage(settings, scorer=fake_scorer, state=RouterState({}, {}), sink=sink,
                         metrics=RouterMetrics())
    records = [Record(value=encode(request(f"q{i}")), topic="req", offset=i) for i in range(5)]
    await stage.process(records)
    assert fake_scorer.calls == [5]
    assert len(sink.on(settings.topics.tier("fast"))) == 5


async def test_scoring_stage_splits_the_wait_into_fetch_and_batching(
    settings: Settings, fake_scorer: FakeScorer
) -> None:
    metrics = RouterMetrics()
    stage = ScoringStage(settings, scorer=fake_scorer, state=RouterState({}, {}),
                         sink=FakeSink(), metrics=metrics)
    now = time.time()
    records = [
        Record(value=encode(request("read")), topic="req", timestamp=now - 3.0, received=now - 1.0),
        Record(value=encode(request("unstamped")), topic="req", timestamp=now - 3.0),
    ]
    await stage.process(records)
    sample = metrics.registry.get_sample_value
    assert sample("router_wait_seconds_count") == 2
    # Only the record with a read time splits: 2 s in fetch, about 1 s waiting for its batch.
    assert sample("router_fetch_seconds_count") == 1
    assert sample("router_fetch_seconds_sum") == pytest.approx(2.0)
    assert sample("router_batching_seconds_count") == 1
    assert 1.0 <= sample("router_batching_seconds_sum") < 1.5


@pytest.mark.parametrize("mode", ["deadletter", "flag"])
async def test_frontier_invalid_output(settings: Settings, mode: str) -> None:
    s = settings.model_copy(update={"router": settings.router.model_copy(
        update={"frontier_invalid": mode})})
    from streams import RoutePolicy

    policy = RoutePolicy.from_settings(s)
    sink = FakeSink()
    stage = UpRouteStage(s, policy=policy, feed=OutcomeFeed(s, policy, sink),
                         sink=sink, metrics=RouterMetrics())
    scored = ScoredRequest(request=request("x"), score=0.9, category="general",
                           tier="frontier", reason="score",
                           attempts=[Attempt(tier="frontier", model="big",
                                             outcome="invalid_output")])
    event = Event(scored=scored, cause="invalid_output", detail="empty", output="")
    raw = encode(event)
    await stage.process(Record(value=raw, topic="up"))
    if mode == "flag":
        [sent] = sink.on(s.topics.responses)
        response = decode(RouteResponse, sent.value)
        assert response.flagged and response.flag_reason and "empty" in response.flag_reason
        assert response.route.model == "big"
    else:
        [sent] = sink.on(s.topics.deadletter)
        dead = decode(DeadLetter, sent.value)
        assert (dead.stage, dead.error_kind, dead.original) == ("uproute", "invalid_output", raw)
        assert dead.tiers_tried == ["frontier"]


def test_metrics_served_on_a_free_port() -> None:
    metrics = RouterMetrics()
    metrics.requests.labels(tier="fast", category="simple", reason="score").inc()
    metrics.start(0, "127.0.0.1")
    try:
        assert metrics.port
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics", timeout=5) as r:
            body = r.read().decode()
        assert 'router_requests_total{category="simple",reason="score",tier="fast"} 1.0' in body
    finally:
        metrics.stop()
        metrics.stop()


def test_cli_function_is_typer_annotated() -> None:
    import inspect

    from streams.cli import router

    params = inspect.signature(router).parameters
    assert list(params) == ["ctx"]




def test_rocksdb_store_falls_back_to_memory_when_not_installed() -> None:
    import importlib.util

    from streams.app import _table_store

    installed = any(importlib.util.find_spec(m) for m in ("rocksdict", "rocksdb"))
    assert _table_store("memory://") == "memory://"
    assert _table_store("rocksdb://") == ("rocksdb://" if installed else "memory://")


def test_default_partition_matches_kafka_default_partitioner() -> None:
    partitioner = DefaultPartitioner()
    for partitions in (1, 3, 12):
        for i in range(200):
            key = f"conversation-{i}-é".encode()
            assert default_partition(key, partitions) == partitioner(
                key, list(range(partitions)), []
            )
    with pytest.raises(ValueError):
        default_partition(b"k", 0)


def test_tables_place_keys_without_a_producer(settings: Settings, fake_sink: FakeSink) -> None:
    router = build_app(settings, scorer=FakeScorer(), sink=fake_sink)
    partitions = settings.topics.partitions
    for table in (router.conversations, router.users):
        assert table.partition_for_key("c-1") == default_partition(b"c-1", partitions)


def test_changelog_topics_are_the_ones_faust_uses(
    settings: Settings, fake_sink: FakeSink
) -> None:
    """`topics create` pre-creates settings.router.changelog_topics(): the names must be the
    real app's, or the router would still make its own on first start."""
    router = build_app(settings, scorer=FakeScorer(), sink=fake_sink)
    used = [t.changelog_topic.get_topic_name() for t in (router.conversations, router.users)]
    assert used == settings.router.changelog_topics() == [
        "router-unit-conversations-changelog", "router-unit-users-changelog"]
    agents = (router.conversation_outcomes_agent, router.user_outcomes_agent)
    read = [agent.channel.get_topic_name() for agent in agents]
    assert read == settings.router.outcome_topics() == [
        "router-unit-conversation-outcomes", "router-unit-user-outcomes"]


def test_stall_watchdog_fires_only_on_a_position_that_stands_still(
    settings: Settings, fake_sink: FakeSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RouterApp, "ready", property(lambda self: True))
    stalled = settings.model_copy(
        update={"router": settings.router.model_copy(update={"stall_timeout_s": 30.0})}
    )
    router = build_app(stalled, scorer=FakeScorer(), sink=fake_sink)
    requests = TP(settings.topics.requests, 0)
    other = TP("someone-else", 0)
    committed = router.app.consumer._committed_offset
    committed[requests] = 10     # everything read is committed: only the reading stops

    router._watch({requests: 5, other: 9}, {requests: 10, other: 1}, now=0.0)
    committed[requests] = 11
    router._watch({requests: 5, other: 9}, {requests: 11, other: 1}, now=20.0)  # moved
    router._watch({requests: 0, other: 9}, {requests: 11, other: 1}, now=45.0)  # caught up
    router._watch({requests: 3, other: 9}, {requests: 11, other: 1}, now=70.0)
    assert not router.stalled.is_set()   # 25 s of standing still: not yet
    router._watch({requests: 3, other: 9}, {requests: 11, other: 1}, now=76.0)
    assert router.stalled.is_set()
    assert f"{settings.topics.requests}[0]: 3 record(s) waiting" in router.stall_reason
    assert "someone-else" not in router.stall_reason
    close_unstarted(router)


def test_stall_watchdog_spares_a_busy_router_whose_commit_moves(
    settings: Settings, fake_sink: FakeSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Overload is not a stall: with a full stream buffer Faust stops fetching a partition
    (its read position stands still, records wait) while the agent works through what was
    read and commits. Measured in bench_router: 4,000 requests at once, a 30 s stop."""
    monkeypatch.setattr(RouterApp, "ready", property(lambda self: True))
    router = build_app(settings, scorer=FakeScorer(), sink=fake_sink)
    tp = TP(settings.topics.requests, 2)
    consumer = router.app.consumer
    for step in range(12):   # 120 s: read position 656 throughout, commit creeping up
        consumer._committed_offset[tp] = 249 + 30 * step
        router._watch({tp: 49}, {tp: 656}, now=10.0 * step)
    assert not router.stalled.is_set()
    for now in (120.0, 140.0, 151.0):  # then nothing moves at all
        router._watch({tp: 49}, {tp: 656}, now=now)
    assert router.stalled.is_set()
    assert "read position 656 and commit 579 unchanged" in router.stall_reason
    close_unstarted(router)


def test_stall_watchdog_off_and_during_rebalance(
    settings: Settings, fake_sink: FakeSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = TP(settings.topics.requests, 0)
    off = settings.model_copy(
        update={"router": settings.router.model_copy(update={"stall_timeout_s": 0.0})}
    )
    monkeypatch.setattr(RouterApp, "ready", property(lambda self: True))
    router = build_app(off, scorer=FakeScorer(), sink=fake_sink)
    for now in (0.0, 1000.0, 5000.0):
        router._watch({requests: 3}, {requests: 1}, now=now)
    assert not router.stalled.is_set()

    monkeypatch.setattr(RouterApp, "ready", property(lambda self: False))  # rebalancing
    watched = build_app(settings, scorer=FakeScorer(), sink=fake_sink)
    for now in (0.0, 1000.0, 5000.0):
        watched._watch({requests: 3}, {requests: 1}, now=now)
    assert not watched.stalled.is_set()


def test_exit_stalled_with_restart_runs_the_same_command_again_in_place(
    tmp_path: Path,
) -> None:
    """router.on_stall=restart: the process executes its command line again (same pid),
    as `llm-router up` needs for a router nobody supervises."""
    script = tmp_path / "stalls_once.py"
    script.write_text(
        "import os, sys, threading, time\n"
        "from pathlib import Path\n"
        "from streams.app import RouterStalled, exit_stalled\n"
        "marker = Path(sys.argv[1])\n"
        "if marker.exists():\n"
        "    print('second run', os.getpid(), sys.argv[1:], flush=True)\n"
        "    sys.exit(0)\n"
        "marker.write_text('x')\n"
        "print('first run', os.getpid(), flush=True)\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=False).start()\n"
        "exit_stalled(RouterStalled('requests[0] stuck'), restart=True)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "marker")],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first.startswith("first run") and second.startswith("second run")
    assert first.split()[2] == second.split()[2]  # the same process
    assert str(tmp_path / "marker") in second  # with the same arguments
    assert "restarting in place: requests[0] stuck" in done.stderr


def test_exit_stalled_leaves_with_the_stall_exit_code() -> None:
    code = ("import threading, time; from streams.app import RouterStalled, exit_stalled;"
            "threading.Thread(target=time.sleep, args=(60,)).start();"  # a thread that lingers
            "exit_stalled(RouterStalled('requests[0] stuck'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == STALL_EXIT_CODE, done.stderr


def test_watchdog_fires_when_the_commit_stands_behind_what_was_read(
    settings: Settings, fake_sink: FakeSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RouterApp, "ready", property(lambda self: True))
    router = build_app(settings, scorer=FakeScorer(), sink=fake_sink)
    tp = TP(settings.topics.requests, 1)
    consumer = router.app.consumer
    consumer._committed_offset[tp] = 5
    router._watch({tp: 0}, {tp: 9}, now=0.0)
    router._watch({tp: 0}, {tp: 12}, now=20.0)
    consumer._committed_offset[tp] = 10        # the commit moved: the clock restarts
    router._watch({tp: 0}, {tp: 14}, now=40.0)
    router._watch({tp: 0}, {tp: 15}, now=65.0)
    assert not router.stalled.is_set()
    router._watch({tp: 0}, {tp: 15}, now=71.0)
    assert router.stalled.is_set()
    assert "commit has stood at 10" in router.stall_reason
    close_unstarted(router)


def test_watchdog_fires_when_a_fresh_group_never_makes_its_first_commit(
    settings: Settings, fake_sink: FakeSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh group has no committed offset (Faust keeps None): the first commit must come
    within the stall timeout too. Seen once in the e2e test: a router whose first commit hung
    in the producer's flush read on and was never restarted."""
    monkeypatch.setattr(RouterApp, "ready", property(lambda self: True))
    router = build_app(settings, scorer=FakeScorer(), sink=fake_sink)
    tp = TP(settings.topics.requests, 0)
    other = TP(settings.topics.requests, 1)
    consumer = router.app.consumer
    router._watch({tp: 0, other: 0}, {tp: 0, other: None}, now=0.0)
    router._watch({tp: 0, other: 0}, {tp: 3, other: None}, now=20.0)
    router._watch({tp: 0, other: 0}, {tp: 4, other: None}, now=29.0)
    assert not router.stalled.is_set()       # 29 s without a first commit: not yet
    consumer._committed_offset[tp] = 4      # a healthy first commit clears it
    router._watch({tp: 0, other: 0}, {tp: 4, other: None}, now=45.0)
    router._watch({tp: 0, other: 0}, {tp: 4, other: None}, now=90.0)
    assert not router.stalled.is_set()      # a partition with nothing read is never held

    fresh = build_app(settings, scorer=FakeScorer(), sink=fake_sink)
    fresh._watch({tp: 0}, {tp: 0}, now=0.0)
    fresh._watch({tp: 0}, {tp: 2}, now=10.0)
    fresh._watch({tp: 0}, {tp: 2}, now=31.0)
    assert fresh.stalled.is_set()
    assert "read up to 2 but nothing was ever committed for 31 s" in fresh.stall_reason
    close_unstarted(router)
    close_unstarted(fresh)


async def test_gap_on_a_router_topic_stops_instead_of_skipping(
    settings: Settings, fake_sink: FakeSink
) -> None:
    router = build_app(settings, scorer=FakeScorer(), sink=fake_sink)
    router._guard_gaps()
    consumer = router.app.consumer
    changelog = TP("router-unit-users-changelog", 0)
    consumer._committed_offset[changelog] = None
    await consumer._add_gap(changelog, 3, 7)     # Faust's own handling elsewhere
    assert not router.stalled.is_set()
    assert changelog in consumer._gap
    await consumer._add_gap(TP(settings.topics.uproute, 2), 3, 7)
    assert router.stalled.is_set()
    assert "skipped offsets 3..6" in router.stall_reason
    assert TP(settings.topics.uproute, 2) not in consumer._gap
    close_unstarted(router)
