"""`python -m triggerd` is the `triggerd` command."""

from triggerd.cli.entry import main

main()
