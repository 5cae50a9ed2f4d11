"""User-facing errors: the CLI prints them as one line and exits with code 2, never a traceback."""

from __future__ import annotations


class KdedgeError(Exception):
    """A problem with the user's input (recipe, data, run directory) that they can fix.

    The message must be one line naming the file, the field or thing at fault, and the fix.
    """

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # always one line

    @property
    def message(self) -> str:
        return str(self.args[0])
