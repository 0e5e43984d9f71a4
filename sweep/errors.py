"""The project's own exception for errors a user can cause and fix, and the exit code they
end a command with."""

from __future__ import annotations

EXIT_USER_ERROR = 2


class SweepError(Exception):
    """A user-fixable problem (bad file, bad YAML, bad flag, unreachable store).

    The CLI prints its one-line message and exits with EXIT_USER_ERROR (2), without a traceback.
    """
