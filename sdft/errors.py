"""Errors meant for people: each says what is wrong and how to fix it. train.py prints them without a traceback."""


class SdftError(Exception):
    """Base class of the errors sdft raises for bad input or configuration."""


class ConfigError(SdftError, ValueError):
    """A configuration value is missing or does not make sense with the others."""


class DataError(SdftError, ValueError):
    """A problem with the user's data; the message names the files."""


class ModelLoadError(SdftError, RuntimeError):
    """The base model could not be found or loaded."""


class LoraFormatError(SdftError, ValueError):
    """A LoRA cannot be written in, or read from, a file for these models; the message lists the offending keys."""


class UnsupportedModelError(SdftError, NotImplementedError):
    """The base model's family (e.g. SDXL) is loaded but this feature does not support it yet."""


class NonFiniteLossError(SdftError, FloatingPointError):
    """The loss became NaN/inf; training stops before the weights are corrupted."""


class TrainingStopped(SdftError):
    """SIGTERM or Ctrl-C stopped training after a checkpoint was saved; the exit code says which signal."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def command_moved(module: str, command: str) -> None:
    """Stop `python -m <module>` (a command line this module had before issue 27 moved every one to sdft/cli/) with
    the command that replaced it, instead of exiting silently with nothing done."""
    raise SystemExit(
        f"`python -m {module}` is no longer a command: run `{command}` (the same options; `{command} --help`)."
    )
