"""`python -m cli`: the same as `fleet`."""

from cli import main

main()
