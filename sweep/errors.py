"""The project's own exception for errors a user can cause and fix."""

from __future__ import annotations


class SweepError(Exception):
    """A user-fixable problem (bad file, bad YAML, bad flag, unreachable store).

    The CLI prints its one-line message and exits with code 2, without a traceback.
    """
