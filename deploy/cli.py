"""The ``llm-router`` command: one entry point, settings built once and passed down.

Subcommands come from the package that owns them: ``classifier`` from
:mod:`classifier_onnx.cli`, ``router`` from :mod:`streams.cli`, ``worker`` from
:mod:`workers.cli`; broker, topics and schema export live here.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from schemas.settings import Settings

__all__ = ["State", "app", "configure_logging", "main", "settings_of"]

console = Console(stderr=True)

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
    from deploy.admin import create_topics

    settings = settings_of(ctx)
    configure_logging(settings.log_level)
    created = asyncio.run(create_topics(settings.kafka, settings.topics, settings.chain))
    console.print(f"created {len(created)} topic(s): {', '.join(created) or '-'}")


@schema_app.command("export")
def schema_export(directory: Path) -> None:
    """Write a JSON Schema file per message type into DIRECTORY."""
    from schemas.codec import export_json_schemas

    for path in export_json_schemas(directory):
        typer.echo(str(path))


def _mount_optional_commands() -> None:
    # Each package owns its commands; they are mounted here so that `llm-router --help` lists
    # everything, and imported lazily by typer only when they run.
    from classifier_onnx.cli import app as classifier_app

    app.add_typer(classifier_app, name="classifier", help="Build data, train, export, evaluate.")


def main() -> None:
    """Console entry point."""
    _mount_optional_commands()
    app()
