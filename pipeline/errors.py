"""Errors a user can cause: one clear line and exit code 2, never a traceback."""


class UserError(Exception):
    """Bad input, bad options or a missing prerequisite; the CLI prints it as one line."""
