"""The one error type whose text is always safe to show a user."""


class EaselError(Exception):
    """Base for every error a user may read; str() never holds secrets or tracebacks."""


class StorageError(EaselError):
    """The data folder or the database cannot be used; the text says what is wrong and what to do."""
