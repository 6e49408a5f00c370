"""One error tree for the whole tool.

Every error a user can meet is a :class:`PipelinePluginError`. Its message names the thing, the
value and the fix. Only ``cli.main`` turns errors into exit codes; only ``server`` turns them into
HTTP statuses.

::

    PipelinePluginError            exit 1   generic failure
    ├── ConfigError                exit 2   bad flags, config or trigger files (fails at load)
    ├── PayloadError               HTTP 400 a delivery or event file is malformed; names `field`
    │   └── PayloadTooLarge        HTTP 413
    ├── AuthenticationError        HTTP 401 a webhook could not be proven authentic
    ├── NotFoundError              exit 4   an event, run, service or image does not exist
    ├── ServiceError               exit 3   an external service (Docker, registry, CI API) failed
    └── StageFailed                exit 1   a pipeline stage ran and its checks failed
"""

from __future__ import annotations

from typing import Any


class PipelinePluginError(Exception):
    exit_code = 1
    http_status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "message": self.message, **self.details}


class ConfigError(PipelinePluginError):
    exit_code = 2
    http_status = 400


class PayloadError(PipelinePluginError):
    """A delivery (or event file) is malformed. ``field`` names the offending field."""

    exit_code = 2
    http_status = 400

    def __init__(self, message: str, field: str | None = None, **details: Any) -> None:
        super().__init__(message, field=field, **details)
        self.field = field


class PayloadTooLarge(PayloadError):
    http_status = 413


class AuthenticationError(PipelinePluginError):
    exit_code = 2
    http_status = 401


class NotFoundError(PipelinePluginError):
    exit_code = 4
    http_status = 404


class ServiceError(PipelinePluginError):
    exit_code = 3
    http_status = 502


class StageFailed(PipelinePluginError):
    exit_code = 1
    http_status = 500


def suggest(value: str, choices: "list[str] | tuple[str, ...] | set[str]") -> str:
    """Return " Did you mean 'x'?" for the closest choice, or a list of valid choices."""
    import difflib

    ordered = sorted(choices)
    close = difflib.get_close_matches(value, ordered, n=1, cutoff=0.6)
    if close:
        return f" Did you mean '{close[0]}'?"
    return " Valid: " + ", ".join(ordered) + "."
