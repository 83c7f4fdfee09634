"""Error types that the command line reports as one clear line instead of a traceback."""

__all__ = ["CaloganError", "ConfigError"]


class CaloganError(Exception):
    """Bad input from the user: the message names the file, key or option and the problem."""


class ConfigError(CaloganError, ValueError):
    """A configuration value or command-line option that cannot be used."""
