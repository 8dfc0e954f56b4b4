"""`python -m arq.cli`: the same as the `arq` command."""

from arq.cli.dispatch import main

main()
