"""`python -m arq.cli`: the same as the `arq` command."""

from arq.cli.app import main

main()
