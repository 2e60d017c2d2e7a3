"""Each package's public surface is deliberate: a sorted `__all__` naming what exists."""

import importlib

import pytest

PACKAGES = ["schemas", "streams", "workers", "classifier_onnx"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_complete(name: str) -> None:
    package = importlib.import_module(name)
    exported = package.__all__
    assert exported == sorted(exported), f"{name}.__all__ is not sorted"
    assert len(set(exported)) == len(exported)
    for member in exported:
        assert hasattr(package, member), f"{name}.__all__ names missing {member!r}"


def test_schemas_exports() -> None:
    import schemas

    assert {
        "RouteRequest", "ScoredRequest", "Attempt", "RouteResponse", "UpRouteEvent",
        "DeadLetter", "Settings", "decode", "encode", "export_json_schemas",
    } <= set(schemas.__all__)
