class UsageError(Exception):
    """An error the user caused and can fix; the CLI prints its one-line message and exits 2."""
