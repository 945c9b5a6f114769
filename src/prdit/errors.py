"""The project's exception types: each message says what went wrong and what to do."""


class PRDiTError(Exception):
    """Base class of every error a user can hit."""


class ConfigError(PRDiTError):
    """A configuration value, model name or shape that cannot work."""


class DataError(PRDiTError):
    """An input file that cannot be read or has the wrong content."""


class CheckpointError(PRDiTError):
    """A checkpoint or model folder that does not fit the model it is loaded into."""
