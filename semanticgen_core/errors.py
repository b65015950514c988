"""Errors that tell the user what was wrong and how to fix it.

All derive from ``SemanticGenError`` (a ``ValueError``) so callers can catch the family at once.
"""

import sys
from typing import Callable


class SemanticGenError(ValueError):
    """Base class: bad input or bad files, with a message that names the problem."""


class CheckpointError(SemanticGenError):
    """A weights file is missing, unreadable, or does not match the model it is loaded into."""


class PlanFormatError(SemanticGenError):
    """A semantic-plan file is corrupted, truncated, of an unknown version, or inconsistent."""


class ShapeError(SemanticGenError):
    """A tensor handed to the library has the wrong shape, with the expected one in the message."""


class Interrupted(Exception):
    """Raised by a cancellation check between sampling steps; models stay usable afterwards."""


def run_command(main: Callable[[], object]) -> None:
    """Run a command-line ``main`` (the recipes, the benchmarks): a ``SemanticGenError`` ends it with its
    message and exit status 2 (as ``python -m semanticgen`` does), not a traceback; the message says what
    to fix."""
    try:
        code = main()
    except SemanticGenError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    sys.exit(code if isinstance(code, int) else None)  # some mains return their record
