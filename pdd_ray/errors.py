"""The one exception type that means "the user asked for something wrong"."""


class UserError(Exception):
    """A mistake in the user's input (bad config value, missing file, unknown name).

    The CLI prints these as one line and exits non-zero, without a traceback;
    every other exception is a bug and keeps its traceback.
    """
