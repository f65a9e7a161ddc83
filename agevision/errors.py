"""The one exception type that the command line turns into a single error line."""


class AgevisionError(Exception):
    """A user-facing error: bad input, missing files, unusable devices.

    The message is one line that says what went wrong and, where possible, what to do.
    """
