"""`python -m triggerd` is the `triggerd` command."""

from triggerd.cli.main import main

main()
