"""One exception type for every problem caused by the user's input.

The CLI prints it as a single line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class RobustsegError(Exception):
    """A problem with input the user gave (file, option, dataset, checkpoint): shown as one line."""


class CheckpointError(RobustsegError):
    pass


class DatasetError(RobustsegError):
    pass


class SuiteError(RobustsegError):
    pass
