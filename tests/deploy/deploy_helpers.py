"""Helpers of the deployment tests: paths, YAML loading and the vendored schemas.

These tests need no broker and no container engine, except ``test_deploy_replay.py``, whose
integration tests use the session broker of ``tests/conftest.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMAS = Path(__file__).resolve().parent / "schemas"


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of ``path``."""
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def vendored_schema(name: str) -> dict[str, Any]:
    with (SCHEMAS / name).open(encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    return schema
