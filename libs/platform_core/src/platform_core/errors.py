"""One error vocabulary for every service.

`ErrorCode` names what went wrong; each code carries the HTTP status the API answers with,
the exit code of the CLI contract (0 ok, 1 training error, 2 configuration error,
3 data loading error, 4 storage error, 5 tracking error) and the failure class the worker uses
to decide whether a job is retried (only TRANSIENT ones are).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from pydantic import ValidationError


class FailureClass(StrEnum):
    USER_INPUT = "USER_INPUT"  # the request was wrong; retrying cannot help
    TRANSIENT = "TRANSIENT"  # the environment hiccuped; a bounded retry may succeed
    FATAL = "FATAL"  # a bug or an unrecoverable state; needs a person


class ExitCode:
    """CLI exit codes: what scripts around `trainctl` branch on."""

    OK = 0
    TRAINING = 1
    CONFIG = 2
    DATA = 3
    STORAGE = 4
    TRACKING = 5


@dataclass(frozen=True, slots=True)
class _CodeInfo:
    http_status: int
    exit_code: int
    failure_class: FailureClass


class ErrorCode(StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    CONFIG_INVALID = "CONFIG_INVALID"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    RATE_LIMITED = "RATE_LIMITED"
    PATH_OUTSIDE_DATA_ROOT = "PATH_OUTSIDE_DATA_ROOT"
    DATA_NOT_FOUND = "DATA_NOT_FOUND"
    DATA_INVALID = "DATA_INVALID"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    DEVICE_UNAVAILABLE = "DEVICE_UNAVAILABLE"
    TRAINING_FAILED = "TRAINING_FAILED"
    TRAINING_DIVERGED = "TRAINING_DIVERGED"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    CANCELLED = "CANCELLED"
    STORAGE_FULL = "STORAGE_FULL"
    STORAGE_ERROR = "STORAGE_ERROR"
    CHECKPOINT_CORRUPT = "CHECKPOINT_CORRUPT"
    TRACKING_UNAVAILABLE = "TRACKING_UNAVAILABLE"
    REDIS_UNAVAILABLE = "REDIS_UNAVAILABLE"
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
    EVENT_DECODE_FAILED = "EVENT_DECODE_FAILED"
    INTERNAL = "INTERNAL"

    @property
    def http_status(self) -> int:
        return _INFO[self].http_status

    @property
    def exit_code(self) -> int:
        return _INFO[self].exit_code

    @property
    def failure_class(self) -> FailureClass:
        return _INFO[self].failure_class


_U, _T, _F = FailureClass.USER_INPUT, FailureClass.TRANSIENT, FailureClass.FATAL

_INFO: dict[ErrorCode, _CodeInfo] = {
    ErrorCode.INVALID_INPUT: _CodeInfo(422, ExitCode.CONFIG, _U),
    ErrorCode.CONFIG_INVALID: _CodeInfo(422, ExitCode.CONFIG, _U),
    ErrorCode.UNAUTHORIZED: _CodeInfo(401, ExitCode.CONFIG, _U),
    ErrorCode.FORBIDDEN: _CodeInfo(403, ExitCode.CONFIG, _U),
    ErrorCode.NOT_FOUND: _CodeInfo(404, ExitCode.DATA, _U),
    ErrorCode.CONFLICT: _CodeInfo(409, ExitCode.CONFIG, _U),
    ErrorCode.PAYLOAD_TOO_LARGE: _CodeInfo(413, ExitCode.CONFIG, _U),
    ErrorCode.RATE_LIMITED: _CodeInfo(429, ExitCode.TRAINING, _T),
    ErrorCode.PATH_OUTSIDE_DATA_ROOT: _CodeInfo(422, ExitCode.CONFIG, _U),
    ErrorCode.DATA_NOT_FOUND: _CodeInfo(404, ExitCode.DATA, _U),
    ErrorCode.DATA_INVALID: _CodeInfo(422, ExitCode.DATA, _U),
    ErrorCode.MODEL_NOT_FOUND: _CodeInfo(404, ExitCode.DATA, _U),
    ErrorCode.DEVICE_UNAVAILABLE: _CodeInfo(422, ExitCode.CONFIG, _U),
    ErrorCode.TRAINING_FAILED: _CodeInfo(500, ExitCode.TRAINING, _F),
    ErrorCode.TRAINING_DIVERGED: _CodeInfo(500, ExitCode.TRAINING, _U),
    ErrorCode.OUT_OF_MEMORY: _CodeInfo(500, ExitCode.TRAINING, _U),
    ErrorCode.CANCELLED: _CodeInfo(409, ExitCode.TRAINING, _U),
    ErrorCode.STORAGE_FULL: _CodeInfo(507, ExitCode.STORAGE, _F),
    ErrorCode.STORAGE_ERROR: _CodeInfo(500, ExitCode.STORAGE, _F),
    ErrorCode.CHECKPOINT_CORRUPT: _CodeInfo(500, ExitCode.STORAGE, _F),
    ErrorCode.TRACKING_UNAVAILABLE: _CodeInfo(503, ExitCode.TRACKING, _T),
    ErrorCode.REDIS_UNAVAILABLE: _CodeInfo(503, ExitCode.TRAINING, _T),
    ErrorCode.UPSTREAM_UNAVAILABLE: _CodeInfo(503, ExitCode.TRAINING, _T),
    ErrorCode.EVENT_DECODE_FAILED: _CodeInfo(500, ExitCode.TRAINING, _F),
    ErrorCode.INTERNAL: _CodeInfo(500, ExitCode.TRAINING, _F),
}


class AppError(Exception):
    """An error the system expected: it has a code, a message safe to show a user, and an
    HTTP status / exit code / failure class derived from the code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return self.code.http_status

    @property
    def exit_code(self) -> int:
        return self.code.exit_code

    @property
    def failure_class(self) -> FailureClass:
        return self.code.failure_class

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __reduce__(self) -> tuple[_Rebuild, tuple[type[AppError], ErrorCode, str]]:
        # copy and pickle rebuild it from its code and message, whatever a subclass's
        # __init__ takes (the default would call it with the message alone)
        return _rebuilt, (type(self), self.code, self.message)


_Rebuild = Callable[[type[AppError], ErrorCode, str], AppError]


def _rebuilt(kind: type[AppError], code: ErrorCode, message: str) -> AppError:
    error = Exception.__new__(kind)
    AppError.__init__(error, code, message)
    return error


MAX_REPORTED_PROBLEMS = 5  # enough to fix a request; a flood helps nobody


def invalid_input(exc: ValidationError, *, what: str = "spec") -> AppError:
    """An INVALID_INPUT error listing each problem as `field.path: reason` (the first few),
    never the value, which may be long or private."""
    errors = exc.errors(include_input=False, include_url=False)
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or what}: {err['msg']}"
        for err in errors[:MAX_REPORTED_PROBLEMS]
    ]
    if len(errors) > MAX_REPORTED_PROBLEMS:
        problems.append(f"and {len(errors) - MAX_REPORTED_PROBLEMS} more")
    return AppError(ErrorCode.INVALID_INPUT, f"invalid {what}: " + "; ".join(problems))
