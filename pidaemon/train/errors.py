"""What `pi-infer train` refuses, with the exit status a script can act on."""

from pidaemon.errors import EX_CONFIG, PiInferError

EX_USAGE = 2


class TrainUsageError(PiInferError):
    """A path on the command line is not what it must be (missing, a file, not ours)."""

    exit_code = EX_USAGE


class DatasetError(PiInferError):
    """The examples cannot train a model: too few labels or images (sysexits EX_CONFIG)."""

    exit_code = EX_CONFIG


class NotAccurateEnough(PiInferError):
    """The trained model scored below --min-accuracy on the held-out images; nothing written."""

    exit_code = 1
