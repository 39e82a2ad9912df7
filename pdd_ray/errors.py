"""The one exception type that means "the user asked for something wrong"."""


class UserError(Exception):
    """A mistake in the user's input (bad config value, missing file, unknown name).

    The CLI prints these as one line and exits non-zero, without a traceback;
    every other exception is a bug and keeps its traceback.
    """


def user_error_in(exc: BaseException) -> UserError | None:
    """The UserError behind an error from Ray (a task's or a worker's), by cause chain or text; else None.

    Ray re-raises a remote exception wrapped, with the remote traceback in its text; the
    CLI wants the user's one line back.
    """
    seen = exc
    while seen is not None:
        if isinstance(seen, UserError) and "\n" not in str(seen):  # Ray's wrapped copies carry the traceback
            return seen
        seen = seen.__cause__ or seen.__context__
    marker = "UserError: "
    lines = [line for line in str(exc).splitlines() if marker in line]
    return UserError(lines[-1].split(marker, 1)[1].strip()) if lines else None
