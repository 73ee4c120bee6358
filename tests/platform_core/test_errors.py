"""Error codes map to HTTP statuses, CLI exit codes and failure classes."""

from __future__ import annotations

import copy
import pickle

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from platform_core.errors import AppError, ErrorCode, ExitCode, FailureClass, invalid_input
from platform_core.events import EventDecodeError


def test_every_code_has_a_mapping() -> None:
    for code in ErrorCode:
        assert 400 <= code.http_status < 600
        assert code.exit_code in {1, 2, 3, 4, 5}
        assert isinstance(code.failure_class, FailureClass)


@pytest.mark.parametrize(
    ("code", "status", "exit_code", "failure"),
    [
        (ErrorCode.INVALID_INPUT, 422, ExitCode.CONFIG, FailureClass.USER_INPUT),
        (ErrorCode.UNAUTHORIZED, 401, ExitCode.CONFIG, FailureClass.USER_INPUT),
        (ErrorCode.NOT_FOUND, 404, ExitCode.DATA, FailureClass.USER_INPUT),
        (ErrorCode.CONFLICT, 409, ExitCode.CONFIG, FailureClass.USER_INPUT),
        (ErrorCode.DATA_NOT_FOUND, 404, ExitCode.DATA, FailureClass.USER_INPUT),
        (ErrorCode.TRAINING_FAILED, 500, ExitCode.TRAINING, FailureClass.FATAL),
        (ErrorCode.STORAGE_FULL, 507, ExitCode.STORAGE, FailureClass.FATAL),
        (ErrorCode.STORAGE_ERROR, 500, ExitCode.STORAGE, FailureClass.FATAL),
        (ErrorCode.TRACKING_UNAVAILABLE, 503, ExitCode.TRACKING, FailureClass.TRANSIENT),
        (ErrorCode.REDIS_UNAVAILABLE, 503, ExitCode.TRAINING, FailureClass.TRANSIENT),
    ],
)
def test_mapping(code: ErrorCode, status: int, exit_code: int, failure: FailureClass) -> None:
    error = AppError(code, "what went wrong")
    assert (error.http_status, error.exit_code, error.failure_class) == (status, exit_code, failure)
    assert str(error) == f"{code.value}: what went wrong"
    assert error.message == "what went wrong"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    size: int = Field(ge=1)


def test_invalid_input_names_fields_never_values() -> None:
    with pytest.raises(ValidationError) as caught:
        _Spec.model_validate({"size": 0, "extra": "private text"})
    error = invalid_input(caught.value, what="thing spec")
    assert error.code is ErrorCode.INVALID_INPUT
    assert error.message.startswith("invalid thing spec: ")
    assert "name: Field required" in error.message
    assert "size: Input should be greater than or equal to 1" in error.message
    assert "private text" not in error.message


def test_invalid_input_caps_the_list() -> None:
    class Many(BaseModel):
        a: int
        b: int
        c: int
        d: int
        e: int
        f: int
        g: int

    with pytest.raises(ValidationError) as caught:
        Many.model_validate({})
    assert invalid_input(caught.value).message.endswith("; and 2 more")


@pytest.mark.parametrize(
    "error",
    [AppError(ErrorCode.NOT_FOUND, "run r1 does not exist"), EventDecodeError("bad JSON")],
)
def test_errors_survive_copy_and_pickle(error: AppError) -> None:
    for again in (copy.copy(error), pickle.loads(pickle.dumps(error))):
        assert again is not error and type(again) is type(error)
        assert (again.code, again.message, str(again)) == (error.code, error.message, str(error))
