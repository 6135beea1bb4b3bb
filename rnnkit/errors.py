"""The one exception type for a user's mistake (bad file, bad option, bad data)."""


class UserError(Exception):
    """Something the user gave or asked for cannot be used.

    The message says what was expected and what was given. The command line
    prints it on one line and exits with status 1, without a traceback.
    """
