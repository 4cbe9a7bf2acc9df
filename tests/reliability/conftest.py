"""Fixtures shared by the reliability scenarios (see harness.py and traffic.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.harness import Platform
from tests.reliability.traffic import Traffic, build, run


@pytest.fixture(scope="session")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    """The shared hostile stream (scenarios 4, 6, 8, 9), run once per session through the whole platform."""
    platform = Platform(tmp_path_factory.mktemp("traffic") / "data").start()
    try:
        yield run(build(platform))
    finally:
        platform.close()
