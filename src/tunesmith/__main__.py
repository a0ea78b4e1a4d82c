"""python -m tunesmith."""

from tunesmith.cli import main

main()
