"""Testing Lambda handlers through triggerd's real local backend: `LocalFunctions` (usable from
any test framework) and the pytest plugin (`triggerd_function`, registered through the
`pytest11` entry point). docs/testing-functions.md shows both."""

from triggerd.testing.harness import FunctionUnderTest, InvokeOutcome, LocalFunctions

__all__ = ["FunctionUnderTest", "InvokeOutcome", "LocalFunctions"]
