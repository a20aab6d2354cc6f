"""Reading a request body, shared by the server's guard and every route it adds: the error a refused request
carries (`RequestProblem`, its status and message) and the checks every JSON body gets.

Its own module, below both the server and the routes, so the server can import the routes it installs
while the routes import the checks, and nothing imports back up the chain.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


class RequestProblem(Exception):
    """A request refused before it reaches Feast: an HTTP status and the message for `detail`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class NonFiniteNumber(ValueError):
    """NaN or Infinity in a body: Python's parser accepts them, JSON does not."""


def reject_constant(name: str) -> float:
    """json.loads' `parse_constant`: refuse NaN and Infinity."""
    raise NonFiniteNumber(name)


def shown(value: Any) -> str:
    """A value as an error message quotes it: JSON, cut to 80 characters."""
    text = json.dumps(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def json_object(body: bytes, fields: Sequence[str], example: str) -> dict[str, Any]:
    """The JSON object in `body`: 400 when it is not JSON (empty, not UTF-8, malformed, NaN/Infinity), 422
    when it is not an object or has a field other than `fields`; `example` shows what to send."""
    if not body.strip():
        raise RequestProblem(400, f"the body is empty: send a JSON object such as {example}")
    try:
        payload = json.loads(body.decode("utf-8-sig"), parse_constant=reject_constant)
    except UnicodeDecodeError as error:
        raise RequestProblem(
            400, f"the body is not UTF-8 text (byte 0x{body[error.start]:02x} at offset {error.start})"
        ) from None
    except NonFiniteNumber as error:
        raise RequestProblem(400, f"{error} is not a JSON number: send finite numbers") from None
    except (ValueError, RecursionError) as error:
        raise RequestProblem(400, f"the body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise RequestProblem(422, f"the body must be a JSON object such as {example}, not {shown(payload)}")
    unknown = sorted(set(payload) - set(fields))
    if unknown:
        raise RequestProblem(422, f"unknown field {shown(unknown[0])}: the fields are {', '.join(fields)}")
    return payload
