"""The one error hierarchy of edgekit.

Every error a user can cause is an ``EdgekitError`` whose message says what was
wrong and ends with what to do about it. Each class carries the process exit
code the CLI uses; ``cli.py`` is the only place that turns them into output.

Exit codes (stable, scripts depend on them):
    0  every budget met
    1  a budget failed (the artifacts were built, but do not meet the profile)
    2  usage or bad input (nothing useful was produced)
    3  an internal failure (a bug, or a converter that crashed)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BUDGET_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


class EdgekitError(Exception):
    """Base of all edgekit errors: a problem, and the fix a user can apply."""

    exit_code: int = EXIT_INTERNAL
    reported: bool = False  # True when the command already printed its report (JSON with --json)

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem.rstrip(". ")
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.problem}. {self.fix}" if self.fix else f"{self.problem}."


class InputError(EdgekitError):
    """Bad input from the user: a file, a flag, a config value."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(InputError):
    """A build config or target profile that does not validate."""


class TargetNotFoundError(ConfigError):
    """A target name that matches no shipped profile and no file."""


class ModelLoadError(InputError):
    """A model file that is missing, corrupt, unsafe, or does not match its factory."""


class DataError(InputError):
    """A data file that is missing, malformed, or does not fit the model."""


class ArtifactError(InputError):
    """An artifact file that is missing, of an unknown format, or not a model."""


class OutputError(InputError):
    """An output location that cannot be written."""


class UnsupportedModelError(InputError):
    """A model a converter cannot lower for a target (names the op and the target)."""


class BackendUnavailableError(InputError):
    """A format whose backend is not built yet, or whose packages are not installed."""


class SecurityError(InputError):
    """Input refused because accepting it would be unsafe (signatures, archives, pickles)."""


class BudgetError(EdgekitError):
    """Artifacts were produced but at least one misses its profile's budgets."""

    exit_code = EXIT_BUDGET_FAILED
    reported = True  # the command printed its report (JSON with --json) before raising


class DeviceCheckError(EdgekitError):
    """The release on a device failed a check there: its health check (and was rolled back), or a status check
    (expired, revoked, damaged)."""

    exit_code = EXIT_BUDGET_FAILED

    def __init__(self, problem: str, fix: str | None = None, reported: bool = False) -> None:
        super().__init__(problem, fix)
        self.reported = reported


class InternalError(EdgekitError):
    """A failure that is not the user's: a bug in edgekit or a crashed converter."""

    exit_code = EXIT_INTERNAL

    def __init__(self, problem: str, fix: str | None = None) -> None:
        super().__init__(
            problem,
            fix or "This is a bug in edgekit or a converter; rerun with --debug for the traceback and report it",
        )


class PredictionError(EdgekitError):
    """A model's runtime failed on inputs that passed the interface check (the artifact, not the caller)."""

    exit_code = EXIT_INTERNAL


class RemoteError(InputError):
    """A device reached over SSH (``--remote``) that edgekit could not use; the message names the step."""


class SshMissingError(RemoteError):
    """No ``ssh``/``scp`` client on this machine."""


class HostUnreachableError(RemoteError):
    """The device did not answer: a wrong name or port, a device that is off, a network in the way."""


class HostKeyError(RemoteError):
    """The device's SSH host key is unknown here, or changed: edgekit never trusts a key blindly."""


class RemoteSetupError(RemoteError):
    """The device lacks what the command needs there (Python, edgekit), or installing it failed."""


class EmulationUnavailableError(InputError):
    """Emulating an ARM device needs a tool (QEMU, debootstrap), a mirror or a package index this machine lacks;
    the message names what is missing and the command that installs it."""
