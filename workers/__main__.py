"""``python -m workers --tier NAME [--concurrency N] [--config FILE]``.

The same command as ``llm-router worker``, without the rest of the CLI; handy for process
tests and containers that run only a tier worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workers.cli import worker

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


@app.command()
def _main(
    ctx: typer.Context,
    tier: Annotated[str, typer.Option("--tier", help="The tier whose topic to consume.")],
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="Model calls in flight at once.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", envvar="LLM_ROUTER_CONFIG", help="YAML or TOML settings."),
    ] = None,
) -> None:
    """Answer a tier's requests with its model until SIGTERM or SIGINT."""
    from deploy.cli import State

    ctx.obj = State(config)
    worker(ctx, tier=tier, concurrency=concurrency)


if __name__ == "__main__":
    app(prog_name="python -m workers")
