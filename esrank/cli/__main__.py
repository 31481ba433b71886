"""`python -m esrank.cli`: the esrank command."""

from esrank.cli import main

main()
