"""Shared fixtures of the Python binding tests: the bundled model, loaded once."""
import os
import pathlib

import pytest

import lococo

SOURCE_DIR = pathlib.Path(os.environ.get("LOCOCO_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
SLICE = SOURCE_DIR / "tests" / "data" / "moby-dick-test-slice.txt"


@pytest.fixture(scope="session")
def model():
    return lococo.load()


@pytest.fixture(scope="session")
def text():
    return SLICE.read_text()


@pytest.fixture(scope="session")
def lococo_binary():
    path = os.environ.get("LOCOCO_BINARY")
    if not path:
        pytest.skip("LOCOCO_BINARY is not set (ctest sets it)")
    return path
