"""The one exception type for bad data input, so entry points can print it without a traceback."""


class DataError(ValueError):
    """Bad input data: the message names the file (or argument) and how to fix it."""
