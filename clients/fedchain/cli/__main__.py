"""`python -m fedchain.cli`: the `fedchain` command."""

from fedchain.cli import main

main()
