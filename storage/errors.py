"""The one error type whose text is always safe to show a user."""


class EaselError(Exception):
    """Base for every error a user may read; str() never holds secrets or tracebacks."""
