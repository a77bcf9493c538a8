"""`python -m queuectl` is the `queuectl` command."""

from queuectl.cli import main

main()
