"""``python -m streams``: the router with settings from ``LLM_ROUTER_*`` variables.

``LLM_ROUTER_CONFIG`` may name a YAML or TOML settings file.
"""

from __future__ import annotations

import logging
import os


def main() -> None:
    from schemas.settings import Settings
    from streams.app import run_router_process

    settings = Settings.load(os.environ.get("LLM_ROUTER_CONFIG") or None)
    logging.basicConfig(
        level=getattr(logging, settings.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    run_router_process(settings)


if __name__ == "__main__":
    main()
