"""The one exception type for a user's mistake (bad file, bad option, bad data),
and how its messages name an option."""


class UserError(Exception):
    """Something the user gave or asked for cannot be used.

    The message says what was expected and what was given. The command line
    prints it on one line and exits with status 1, without a traceback.
    """


def flag(name: str, negated: bool = False) -> str:
    """The command-line flag of a configuration field, as messages name it:
    ``hidden_size`` -> ``--hidden-size`` (``--no-hidden-size`` if ``negated``)."""
    return ("--no-" if negated else "--") + name.replace("_", "-")
