"""``llm-router router``: run the scoring and up-route agents until SIGTERM or SIGINT."""

from __future__ import annotations

import typer

__all__ = ["router"]


def router(ctx: typer.Context) -> None:
    """Run the router: score requests, publish them to tier topics, up-route failures."""
    from deploy.cli import configure_logging, settings_of
    from streams.app import run_router_process

    settings = settings_of(ctx)
    configure_logging(settings.log_level)
    run_router_process(settings)
