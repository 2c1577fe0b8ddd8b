"""The `triggerd` command's entry point (`python -m triggerd` and the console script): the
garbage collector is set for start-up before the command line's modules are imported, then
the command line (`main`) runs.

Every command's start-up is mostly imports (click, pydantic, a config's models; aiohttp for
`run`), which allocate hundreds of thousands of long-lived containers: with CPython's default
threshold the collector walks them every 700 allocations, some 3 % of `triggerd validate`'s
instructions. `defer_gc` is the setting `run` already used from the config's load on; here it
covers the imports before it, for every command.
"""

from __future__ import annotations


def main() -> None:
    from triggerd.daemon.gctune import defer_gc

    defer_gc()
    from triggerd.cli.main import main as cli

    cli()
