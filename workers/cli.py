"""``llm-router worker --tier NAME [--concurrency N]``: run one tier worker until signalled.

The function :func:`worker` is registered on the ``llm-router`` app by :mod:`deploy.cli`;
``python -m workers`` runs the same function on its own (settings from ``LLM_ROUTER_*``
environment variables or ``--config``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

__all__ = ["worker"]


def worker(
    ctx: typer.Context,
    tier: Annotated[str, typer.Option("--tier", help="The tier whose topic to consume.")],
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            min=1,
            help="Model calls in flight at once (default: the tier's concurrency).",
        ),
    ] = None,
) -> None:
    """Answer a tier's requests with its model until SIGTERM or SIGINT.

    Joins the consumer group ``<app_id>-<tier>``: start more processes to scale a tier.
    """
    from deploy.cli import configure_logging, settings_of
    from workers.worker import run_worker

    settings = settings_of(ctx)
    if tier not in settings.tiers:
        raise typer.BadParameter(
            f"unknown tier {tier!r}; configured tiers: {sorted(settings.tiers)}",
            param_hint="--tier",
        )
    configure_logging(settings.log_level)
    if settings.log_level != "DEBUG":
        # httpx logs every request at INFO: thousands of lines a second on a busy tier.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(run_worker(settings, tier, concurrency=concurrency))
