"""Errors a user can fix. The CLI prints these as one line, without a traceback."""


class PaddockError(Exception):
    """An expected failure with a message that names the file, field or command that fixes it."""
