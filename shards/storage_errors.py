"""The error every storage operation raises for a location it cannot use (its own module so the
location probe and the store can both raise it without importing each other)."""


class StorageError(OSError):
    """An output location that cannot be read or written; names the URL."""
