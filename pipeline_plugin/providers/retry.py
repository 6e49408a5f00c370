"""Calling a CI service's API: bounded retries for what may pass, clear errors for what will not.

- 429 and 5xx answers, timeouts and refused connections are retried with exponential backoff
  (with jitter), honouring ``Retry-After`` (seconds or an HTTP date). A request that *starts*
  something (``starts=True``: a workflow dispatch, a pipeline, a release) is not sent again once
  it may have reached the service with no answer back (a read timeout, a connection dropped
  after sending): the run may have started, so a second request could start it twice. That
  failure is a :class:`ServiceError` with ``outcome="unknown"``; the worker records the run
  ``unknown`` and never starts it again by itself. Bounded: at most
  ``PIPELINE_PLUGIN_HTTP_RETRIES`` retries (default 4), and a ``Retry-After`` longer than
  ``PIPELINE_PLUGIN_HTTP_MAX_WAIT`` seconds (default 60) fails at once instead of blocking.
- 401, 403, 404 and 422 (and other 4xx) fail at once with a :class:`ConfigError` whose message
  says what to fix: the token, its permissions, the rule's target, the pipeline's inputs.

Each provider turns its SDK's exception into an :class:`ApiFailure` (status, service message,
Retry-After); this module decides.
"""

from __future__ import annotations

import email.utils
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Callable, Mapping, TypeVar

from ..errors import ConfigError, ServiceError

T = TypeVar("T")


@dataclass
class ApiFailure(Exception):
    status: int | None  # None: no answer at all (timeout, connection refused)
    message: str
    retry_after: float | None = None
    retryable: bool | None = None  # override (e.g. GitHub's 403 secondary rate limit)
    delivered: bool = False  # no answer, but the request may have reached the service
    url: str = ""  # where the request went (scheme, host, port and path; never credentials or query)

    @classmethod
    def no_answer(cls, service: str, exc: BaseException) -> "ApiFailure":
        return cls(None, f"no answer from {service} ({type(exc).__name__}: {exc})", delivered=maybe_delivered(exc),
                   url=request_url(exc))

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message}" if self.status else self.message


def maybe_delivered(exc: BaseException) -> bool:
    """Whether a request that got no answer may still have reached the service: True for read
    timeouts and connections dropped after sending; False when no connection was made (refused,
    unknown host, connect timeout). Follows wrapped causes (msrest's ``inner_exception``)."""
    import requests

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, requests.ConnectTimeout):
            return False
        if isinstance(current, requests.ReadTimeout):
            return True
        if isinstance(current, requests.ConnectionError):
            text = repr(current)
            return not any(word in text for word in ("NewConnectionError", "NameResolutionError", "Connection refused",
                                                      "Failed to establish a new connection"))
        current = getattr(current, "inner_exception", None) or current.__cause__ or current.__context__
    return True  # unknown kind of "no answer": assume it may have arrived


def _causes(exc: BaseException):
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "inner_exception", None) or current.__cause__ or current.__context__


def request_url(exc: BaseException) -> str:
    """The URL a failed request went to (from requests' exception, also wrapped by msrest), without
    credentials, query or fragment, so that it can go into a message; empty if unknown."""
    from urllib.parse import urlsplit, urlunsplit

    for current in _causes(exc):
        request = getattr(current, "request", None)
        url = getattr(request, "url", None)
        if isinstance(url, str) and url:
            parts = urlsplit(url)
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            netloc = host + (f":{parts.port}" if parts.port else "")
            return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return ""


#: where each service's address comes from, for "cannot connect" messages
URL_SETTINGS = {
    "GitHub": "GITHUB_API_URL",
    "GitLab": "the rule's pipeline.url or CI_SERVER_URL",
    "Azure DevOps": "the rule's pipeline.organization or SYSTEM_COLLECTIONURI",
}


def connection_problem(failure: ApiFailure) -> str:
    """What kind of "no answer" it was, in a few words."""
    text = failure.message
    if "Connection refused" in text or "ConnectionRefused" in text:
        return "the connection was refused (nothing listens at that address)"
    if "NameResolution" in text or "Name or service not known" in text or "nodename nor servname" in text:
        return "the host name does not resolve"
    if "ConnectTimeout" in text or "timed out" in text:
        return "no answer within PIPELINE_PLUGIN_HTTP_TIMEOUT"
    return "no answer"


def timeout() -> float:
    """Seconds to wait for one answer (``PIPELINE_PLUGIN_HTTP_TIMEOUT``, default 30)."""
    return float(os.environ.get("PIPELINE_PLUGIN_HTTP_TIMEOUT") or 30)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def call(
    fn: Callable[[], T],
    *,
    service: str,
    action: str,
    to_failure: Callable[[Exception], ApiFailure | None],
    fixes: Mapping[int, str],
    starts: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``fn`` (one API call through an SDK) with the retry policy above; ``starts``: the call
    starts a run, so it is not repeated once it may have been delivered."""
    retries = int(os.environ.get("PIPELINE_PLUGIN_HTTP_RETRIES") or 4)
    base = float(os.environ.get("PIPELINE_PLUGIN_HTTP_BACKOFF") or 1.0)
    max_wait = float(os.environ.get("PIPELINE_PLUGIN_HTTP_MAX_WAIT") or 60)
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except (ConfigError, ServiceError):
            raise
        except Exception as exc:  # noqa: BLE001 - classified below; unknown ones re-raised
            failure = exc if isinstance(exc, ApiFailure) else to_failure(exc)
            if failure is None:
                raise
        status = failure.status
        transient = failure.retryable
        if transient is None:
            transient = status is None or status == 429 or status >= 500
        if not transient:
            fix = fixes.get(status or 0) or fixes.get(0, "")
            raise ConfigError(
                f"{service} refused to {action}: {failure}. {fix}".strip(),
                service=service,
                status=status,
            ) from None
        if starts and status is None and failure.delivered:
            raise ServiceError(
                f"{service} did not answer the request to {action} ({failure}); it may have started the run "
                f"anyway, so it is not sent again. Look in {service} whether it started; if not, start it again "
                "(`pipeline-plugin events replay EVENT_ID`, or run the same dispatch again); a slow service "
                "may need a longer PIPELINE_PLUGIN_HTTP_TIMEOUT.",
                service=service,
                outcome="unknown",
            ) from None
        if attempt > retries and status is None:
            where = f" at {failure.url}" if failure.url else ""
            raise ServiceError(
                f"cannot connect to {service}{where} to {action}: {connection_problem(failure)}, "
                f"after {attempt} attempts; last error: {failure}. Check the address "
                f"({URL_SETTINGS.get(service, 'the service URL')}) and that {service} is reachable from this "
                "machine (proxy, firewall, VPN).",
                service=service,
                url=failure.url,
            ) from None
        if attempt > retries:
            raise ServiceError(
                f"{service} did not {action} after {attempt} attempts; last answer: {failure}. "
                f"It is a problem on {service}'s side or the network: try again later "
                f"(retries: PIPELINE_PLUGIN_HTTP_RETRIES={retries}).",
                service=service,
                status=status,
            ) from None
        if failure.retry_after is not None:
            delay = failure.retry_after
            if delay > max_wait:
                raise ServiceError(
                    f"{service} asks to wait {delay:.0f}s (Retry-After) before it will {action}, longer "
                    f"than PIPELINE_PLUGIN_HTTP_MAX_WAIT={max_wait:.0f}s; try again later.",
                    service=service,
                    status=status,
                    retry_after=delay,
                ) from None
        else:
            delay = min(max_wait, base * 2 ** (attempt - 1)) * (1 + random.random() / 4)
        print(f"{service}: {failure}; retrying to {action} in {delay:.1f}s ({attempt}/{retries})", file=sys.stderr)
        sleep(delay)
