"""``python -m troika``: the same as the ``troika`` console script."""

from troika.cli import main

main()
