"""``python -m streams``: the router with settings from ``LLM_ROUTER_*`` variables.

``LLM_ROUTER_CONFIG`` may name a YAML or TOML settings file.
"""

from __future__ import annotations

import asyncio
import logging
import os


def main() -> None:
    from schemas.settings import Settings
    from streams.app import RouterStalled, exit_stalled, run_router

    settings = Settings.load(os.environ.get("LLM_ROUTER_CONFIG") or None)
    logging.basicConfig(
        level=getattr(logging, settings.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(run_router(settings))
    except RouterStalled as exc:
        exit_stalled(exc, restart=settings.router.on_stall == "restart")


if __name__ == "__main__":
    main()
