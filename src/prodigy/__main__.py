"""`python -m prodigy` runs the command line."""

from prodigy.cli.main import main

main()
