"""`python -m pipeline.cli`: the same as the `pipeline` command."""

from pipeline.cli import main

main()
