"""The one error type a user's mistake raises, so every CLI can print it as one line and exit 2."""


class UserError(Exception):
    """A problem with the user's input (a file, a value, a folder) and how to fix it.

    CLIs catch it, print its message on one line and exit with code 2, without a traceback.
    """

    exit_code = 2


class ModelUnreadable(UserError):
    """An engine cannot read or compile a model file that the manifest lists and its hash
    passes: named alone it is a user error (exit 2); the automatic choice passes over that
    (file, engine) pair with a note, since another engine may run the same file."""
