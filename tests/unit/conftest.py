"""Fixtures for unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from triggerd.state.sqlite import SQLiteStateStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStateStore]:
    """A fresh SQLite state store in the test's temp dir."""
    s = SQLiteStateStore(str(tmp_path / "state.db"))
    await s.open()
    yield s
    await s.close()
