"""The one exception type that reaches the user as a one-line message."""


class UserError(Exception):
    """Bad input from the user: a path, a config key or value, a shard pattern.

    The CLI prints ``error: <message>`` on one line and exits with status 2; the
    message names the file, key or value and says what was expected.
    """
