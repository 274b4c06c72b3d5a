"""The mark of an error a user can act on."""


class ActionableError(Exception):
    """An error whose message says what went wrong, where (the file, the stage, the run holding a
    lock) and the fix: the CLI prints the message alone, without a traceback (`thresher --debug`
    adds it). Errors without this mark are unexpected and keep their traceback."""
