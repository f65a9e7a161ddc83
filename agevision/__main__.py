"""`python -m agevision`: the same as the `agevision` command."""

from agevision.cli import main

main()
