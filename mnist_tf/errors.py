"""User-facing errors: problems a user caused and can fix."""


class UserError(Exception):
    """A problem with the user's input (flag, file, directory, checkpoint).

    The entry points print the message on one line and exit with status 2,
    without a traceback. The message names the culprit and, where possible,
    how to fix it.
    """


class DataError(UserError):
    """The MNIST data could not be found, fetched, verified or read."""


class CheckpointError(UserError):
    """A checkpoint is missing, damaged or does not match the model."""


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite (usually: the learning rate is too high)."""
