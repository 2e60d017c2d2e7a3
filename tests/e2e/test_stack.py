"""The whole stack with real local model tiers: broker, llama.cpp servers, router, workers.

Slow by nature (three real language models on CPU); marked ``e2e``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deploy.admin import create_all_topics
from deploy.cli import DEFAULT_MODELS
from deploy.stack import Stack
from deploy.traffic import sample_requests
from schemas import ChatMessage, RouteRequest, RouteResponse, Settings
from streams.client import RequestDeadLettered, RouterClient
from tests.conftest import free_port

# Three CPU models answering one request at a time: minutes, not the suite's 300 s default.
pytestmark = [
    pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900),
]

README = Path(__file__).resolve().parents[2] / "README.md"


def tier_for_score(settings: Settings, score: float) -> str:
    index = sum(score >= t for t in settings.router.thresholds)
    return settings.chain[index]


@pytest.fixture
def stack(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Stack]:
    ports = {tier: free_port() for tier in ("fast", "balanced", "frontier")}
    # Short answers keep three CPU models fast enough for a test; timeouts fit CPU speeds.
    tiers = {
        "fast": {"model": "smollm2-135m-instruct", "timeout_s": 60.0},
        "balanced": {"model": "qwen2.5-coder-0.5b-instruct", "timeout_s": 90.0},
        "frontier": {"model": "qwen2.5-coder-1.5b-instruct", "timeout_s": 120.0},
    }
    settings = make_settings(
        tiers={
            name: {
                **values,
                "base_url": f"http://127.0.0.1:{ports[name]}/v1",
                "concurrency": 1,
                "max_output_tokens": 24,
                # The 24-token cap is ours: an answer cut there is not the model's failure.
                "validation": {"truncated": False},
            }
            for name, values in tiers.items()
        },
        router={"metrics_port": free_port(), "web_port": free_port()},
    )
    asyncio.run(create_all_topics(settings))
    stack = Stack(
        settings,
        run_dir=tmp_path / "stack",
        models_dir=DEFAULT_MODELS,
        start_broker=False,
        worker_ports={tier: free_port() for tier in settings.chain},
    )
    stack.start()
    components = list(stack.components)
    try:
        yield stack
    finally:
        stack.stop()
        # Shown by pytest only when the test failed: what each process said last.
        for component in components:
            if component.log_path is not None and component.log_path.exists():
                tail = component.log_path.read_text(errors="replace").splitlines()[-40:]
                print(f"----- {component.name} ({component.log_path}) -----", *tail, sep="\n")


def refused_everywhere(error: BaseException) -> bool:
    """A dead letter because every tier's model refused or answered invalidly: the stack did
    its job (validated, up-routed, kept the whole history); the tiny local models said no.
    Seen once: "Browse the used inventory of the Model Y ..." refused by both Qwen tiers."""
    if not isinstance(error, RequestDeadLettered):
        return False
    letter = error.dead_letter
    return (
        letter.stage == "uproute"
        and len(letter.tiers_tried) >= 2
        and bool(letter.attempts)
        and all(a.outcome == "invalid_output" for a in letter.attempts)
    )


async def ask_all(
    settings: Settings, requests: list[RouteRequest], *, allow_refusals: int = 0
) -> tuple[dict[str, RouteResponse], int]:
    async with RouterClient(settings) as client:
        ids = [await client.submit(request) for request in requests]
        results = await asyncio.gather(
            *(client.result(i, 480) for i in ids), return_exceptions=True
        )
        errors = {i: r for i, r in zip(ids, results, strict=True) if isinstance(r, BaseException)}
        refused = {i for i, e in errors.items() if refused_everywhere(e)}
        missing = {i: repr(e) for i, e in errors.items() if i not in refused}
        assert not missing, f"no answer within 480 s for {missing}"
        assert len(refused) <= allow_refusals, f"refused on every tier: {sorted(refused)}"
        answers = [r for r in results if isinstance(r, RouteResponse)]
        # Let redeliveries, if any, arrive before counting duplicates.
        await asyncio.sleep(2)
        return {a.request_id: a for a in answers}, client.duplicates


def test_stack_answers_every_category_once_and_up_routes_around_a_dead_tier(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = stack.settings
    requests = [r for r in sample_requests(per_category=2) if "-long-" not in r.id]
    # At most one request may be refused by the models of every tier it reached (a dead
    # letter with its whole history); every other one must be answered.
    answers, duplicates = asyncio.run(ask_all(settings, requests, allow_refusals=1))

    assert len(answers) >= len(requests) - 1
    assert set(answers) <= {r.id for r in requests}
    assert duplicates == 0
    by_id = {r.id: r for r in requests}
    categories = set()
    for request_id, answer in answers.items():
        route = answer.route
        categories.add(route.category)
        assert answer.content.strip(), request_id
        assert route.tiers_tried[-1] == route.tier
        assert route.attempts[-1].outcome == "ok"
        assert answer.usage.output_tokens > 0
        request = by_id[request_id]
        if request.forced_tier is not None:
            assert route.reason == "forced" and route.tiers_tried[0] == request.forced_tier
        elif route.reason == "score":
            assert route.tiers_tried[0] == tier_for_score(settings, route.score)
    assert len(categories) >= 3, categories

    # Stop the fast tier's model server: a request for it must end answered by the next tier.
    server = stack.component("model-fast").process
    assert server is not None
    server.send_signal(signal.SIGKILL)
    server.wait(timeout=10)
    forced = RouteRequest(
        user_id="e2e", conversation_id="e2e-down", forced_tier="fast",
        messages=[ChatMessage(role="user", content="Say hi.")],
    )
    answers, duplicates = asyncio.run(ask_all(settings, [forced]))
    route = answers[forced.id].route
    assert route.tiers_tried == ["fast", "balanced"]
    assert route.attempts[0].outcome in {"upstream_error", "timeout"}
    assert route.tier == "balanced"

    # The README's client example runs as written against this stack.
    for key, value in {
        "LLM_ROUTER_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "LLM_ROUTER_TOPICS__REQUESTS": settings.topics.requests,
        "LLM_ROUTER_TOPICS__RESPONSES": settings.topics.responses,
        "LLM_ROUTER_TOPICS__DEADLETTER": settings.topics.deadletter,
    }.items():
        monkeypatch.setenv(key, value)
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block.group(1), str(README), "exec"), {"__name__": "readme"})
    assert out.getvalue().split()[0] in settings.chain
