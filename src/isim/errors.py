"""The one base class of the errors a user can fix; the CLI prints them without a traceback."""


class IsimError(Exception):
    """Bad params, bad data, a checkpoint that does not fit, training that cannot go on."""


class ModelError(IsimError, ValueError):
    """A model cannot be built, its weights do not fit it, or a checkpoint is from another model."""
