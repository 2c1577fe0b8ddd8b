"""The pytest plugin (entry point `pytest11`: loaded wherever triggerd-daemon is installed).

Fixtures:

- `triggerd_function(name, config=...)` or `triggerd_function(handler=..., code=...)`: a
  function started on the local backend (warm workers, its own interpreter); `.invoke(event)`,
  `.invoke_sample("s3", key="a.txt")` (generate-event's events), `.invoke_fixture(path)` (a
  `triggerd record` fixture) return an `InvokeOutcome` with `.response`, `.error`, `.logs`.
  Its workers stop when the test ends.
- `triggerd_functions`: the `LocalFunctions` behind it, for the test's length.

Importing this module imports nothing of triggerd's: the plugin costs nothing in test runs
that do not use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from triggerd.testing.harness import FunctionUnderTest, LocalFunctions


@pytest.fixture
def triggerd_functions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFunctions]:
    """Local functions started by this test, stopped (every worker) when it ends."""
    from triggerd.testing.harness import LocalFunctions

    functions = LocalFunctions(work_dir=tmp_path_factory.mktemp("triggerd"))
    try:
        yield functions
    finally:
        functions.close()


@pytest.fixture
def triggerd_function(
    triggerd_functions: LocalFunctions,
) -> Callable[..., FunctionUnderTest]:
    """`triggerd_function("name", config="triggerd.toml")` or `triggerd_function(
    handler="app.handler", code="src", runtime="python3.12", environment={...})`: the
    function running on triggerd's local backend."""

    def start(name: str = "function", **kwargs: Any) -> FunctionUnderTest:
        return triggerd_functions.function(name, **kwargs)

    return start
