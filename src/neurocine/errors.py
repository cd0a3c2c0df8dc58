"""Project exceptions: each carries a message a user can act on, printed by the CLI as one line."""


class NeuroCineError(Exception):
    """Base class of every error the CLI reports as a one-line message."""


class ConfigError(NeuroCineError):
    """A config file, key, value or override is wrong."""


class SchemaError(NeuroCineError):
    """An HDF5 subject file breaks the data contract (docs/design.md §3)."""


class DataError(NeuroCineError):
    """Raw input (CIFTI, NIfTI, video, arrays) cannot be converted."""


class CheckpointError(NeuroCineError):
    """A checkpoint or weight directory is missing, truncated or of the wrong kind."""
