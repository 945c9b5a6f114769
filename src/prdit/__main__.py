"""``python -m prdit`` (used by ``torchrun -m prdit``)."""

from prdit.cli import main

main()
