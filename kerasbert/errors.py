"""The one exception type a user is meant to see.

Everything that is the user's fault (a bad option, a missing file, a corrupt
checkpoint) raises `KerasbertError` with a one-line message naming the problem.
The command-line entry points print that line and exit non-zero instead of
showing a traceback.
"""


class KerasbertError(Exception):
    """A problem with the user's input, reported as one line."""


def first_line(error):
    """The first line of an exception's message (its type's name if it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
