"""Authenticity schemes for webhook deliveries.

``SCHEMES`` maps a scheme name to ``verify(request, secret) -> None``; each raises
:class:`~pipeline_plugin.errors.AuthenticationError` (HTTP 401) saying *what* was wrong (missing
header, malformed or stale timestamp, signature mismatch) and never echoing the secret or the
expected signature. Every comparison is constant time (``hmac.compare_digest`` over bytes).

``mlflow-hmac``
    MLflow 3.x: ``X-MLflow-Signature: v1,<base64 HMAC-SHA256(secret, f"{delivery_id}.{timestamp}.{body}")>``
    with ``X-MLflow-Delivery-Id`` and ``X-MLflow-Timestamp`` (unix seconds). The secret is used
    as raw UTF-8 text.
``standard-webhooks``
    https://www.standardwebhooks.com: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``
    holding one or more space-separated ``v1,<base64>`` signatures (several during key rotation;
    other versions such as ``v1a`` are ignored). HMAC-SHA256 over ``id.timestamp.body``. A secret
    starting ``whsec_`` is base64-decoded after the prefix; any other secret is used as raw text.
``token``
    A shared token: ``Authorization: Bearer <token>``, or ``?token=<token>`` in the URL (for senders
    that cannot set headers, e.g. Event Grid), or HTTP Basic auth whose password is the token
    (EventBridge API destinations' "Basic" connections), or - when the server config sets
    ``options: {token_header: <name>}`` for the source - the raw token in that header (EventBridge
    "API key" connections, e.g. ``x-api-key``).
``huggingface-secret``
    Hugging Face Hub: the secret arrives verbatim in ``X-Webhook-Secret``.
``databricks-hmac``
    Databricks Workspace Model Registry: ``X-Databricks-Signature`` holds the hex HMAC-SHA256 of the
    raw body under the webhook's shared secret (UTF-8 text). Databricks signs no timestamp, so there
    is no replay window: a replayed delivery is the same body, hence the same delivery id, and is
    stored once.
``standard-webhooks-or-token``
    The ``cloudevents`` default: a delivery carrying ``webhook-signature`` must pass
    ``standard-webhooks`` (a bad or stale signature is never rescued by a token); one without it
    must pass ``token``.

Both HMAC schemes reject a timestamp more than ``TOLERANCE_SECONDS`` (5 minutes) from
``request.now``, in either direction, so a captured delivery cannot be replayed later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Callable

from ..errors import AuthenticationError
from . import Headers, Request

TOLERANCE_SECONDS = 5 * 60

MLFLOW_SIGNATURE = "X-MLflow-Signature"
MLFLOW_DELIVERY_ID = "X-MLflow-Delivery-Id"
MLFLOW_TIMESTAMP = "X-MLflow-Timestamp"

SW_ID = "webhook-id"
SW_TIMESTAMP = "webhook-timestamp"
SW_SIGNATURE = "webhook-signature"

HF_SECRET = "X-Webhook-Secret"

DATABRICKS_SIGNATURE = "X-Databricks-Signature"


def _headers(request: Request) -> Headers:
    h = request.headers
    return h if isinstance(h, Headers) else Headers(h or {})


def _need_secret(secret: str | None) -> str:
    if not secret:
        # The server refuses sources without a secret before getting here; this is a second lock.
        raise AuthenticationError("no secret is configured for this source, so no delivery can be verified")
    return secret


def _header(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None or not str(value).strip():
        raise AuthenticationError(f"missing header {name}")
    return str(value).strip()


def _check_timestamp(raw: str, name: str, now: float) -> None:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise AuthenticationError(f"header {name} must be unix seconds (digits only)")
    age = now - int(raw)
    if abs(age) > TOLERANCE_SECONDS:
        direction = "old" if age > 0 else "in the future"
        raise AuthenticationError(
            f"stale timestamp: header {name} is {int(abs(age))} s {direction}; deliveries are accepted "
            f"within {TOLERANCE_SECONDS} s of the listener's clock (check both clocks, or this is a replay)"
        )


def sign(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256(key, id.timestamp.body)>`` - the construction MLflow and Standard
    Webhooks share. Exposed for tests, benchmarks and senders."""
    mac = hmac.new(key, msg_id.encode() + b"." + timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def _check_signatures(header_value: str, name: str, expected: str) -> None:
    expected_b = expected.encode()
    candidates = [part for part in header_value.split() if part.startswith("v1,")]
    if not candidates:
        raise AuthenticationError(f"header {name} holds no 'v1,<base64>' signature")
    ok = False
    for candidate in candidates:  # compare all, do not stop early
        ok |= hmac.compare_digest(candidate.encode(), expected_b)
    if not ok:
        raise AuthenticationError(
            f"bad signature: no signature in header {name} matches the body "
            "(wrong secret, or the body was changed after signing)"
        )


def _hmac_scheme(request: Request, key: bytes, id_name: str, ts_name: str, sig_name: str) -> None:
    headers = _headers(request)
    signature = _header(headers, sig_name)
    msg_id = _header(headers, id_name)
    timestamp = _header(headers, ts_name)
    _check_timestamp(timestamp, ts_name, request.now)
    _check_signatures(signature, sig_name, sign(key, msg_id, timestamp, request.body or b""))


def verify_mlflow(request: Request, secret: str) -> None:
    key = _need_secret(secret).encode("utf-8")
    _hmac_scheme(request, key, MLFLOW_DELIVERY_ID, MLFLOW_TIMESTAMP, MLFLOW_SIGNATURE)


def standard_webhooks_key(secret: str) -> bytes:
    """``whsec_<base64>`` -> the decoded key; any other secret -> its UTF-8 bytes."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_"):], validate=True)
        except (binascii.Error, ValueError):
            # A configuration problem, reported without the secret itself.
            raise AuthenticationError(
                "the configured secret starts with 'whsec_' but the rest is not valid base64; "
                "copy the whole secret from the sender"
            ) from None
    return secret.encode("utf-8")


def verify_standard_webhooks(request: Request, secret: str) -> None:
    key = standard_webhooks_key(_need_secret(secret))
    _hmac_scheme(request, key, SW_ID, SW_TIMESTAMP, SW_SIGNATURE)


def _query_token(request: Request) -> str | None:
    try:
        value = (request.query or {}).get("token")
    except AttributeError:
        return None
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return value if isinstance(value, str) else None


def verify_token(request: Request, secret: str) -> None:
    expected = _need_secret(secret).encode("utf-8")
    headers = _headers(request)
    candidates: list[str] = []
    auth = headers.get("Authorization")
    if isinstance(auth, str) and auth.strip():
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer":
            candidates.append(value.strip())
        elif scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                raise AuthenticationError("header Authorization: Basic credentials are not valid base64") from None
            candidates.append(decoded.partition(":")[2])
        else:
            raise AuthenticationError("header Authorization must be 'Bearer <token>' (or Basic with the token as password)")
    query = _query_token(request)
    if query is not None:
        candidates.append(query)
    token_header = (request.options or {}).get("token_header")
    if isinstance(token_header, str) and token_header:
        value = headers.get(token_header)
        if isinstance(value, str) and value:
            candidates.append(value.strip())
    if not candidates:
        also = f", or header {token_header}: <token>" if isinstance(token_header, str) and token_header else ""
        raise AuthenticationError(f"missing token: send 'Authorization: Bearer <token>' or '?token=<token>'{also}")
    ok = False
    for candidate in candidates:
        ok |= hmac.compare_digest(candidate.encode("utf-8"), expected)
    if not ok:
        raise AuthenticationError("bad token: the token sent does not match the configured secret")


def verify_huggingface(request: Request, secret: str) -> None:
    expected = _need_secret(secret).encode("utf-8")
    sent = _headers(request).get(HF_SECRET)
    if not isinstance(sent, str) or not sent:
        raise AuthenticationError(f"missing header {HF_SECRET}")
    if not hmac.compare_digest(sent.encode("utf-8"), expected):
        raise AuthenticationError(f"bad secret: header {HF_SECRET} does not match the configured secret")


def sign_databricks(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the body, as Databricks sends it in ``X-Databricks-Signature``."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_databricks(request: Request, secret: str) -> None:
    expected = sign_databricks(_need_secret(secret), request.body or b"").encode()
    sent = _header(_headers(request), DATABRICKS_SIGNATURE)
    if not hmac.compare_digest(sent.lower().encode("utf-8", "replace"), expected):
        raise AuthenticationError(
            f"bad signature: header {DATABRICKS_SIGNATURE} does not match the body "
            "(wrong secret, or the body was changed after signing)"
        )


def verify_standard_webhooks_or_token(request: Request, secret: str) -> None:
    if _headers(request).get(SW_SIGNATURE) is not None:
        verify_standard_webhooks(request, secret)
    else:
        try:
            verify_token(request, secret)
        except AuthenticationError as exc:
            raise AuthenticationError(
                f"{exc.message}; or sign the delivery with Standard Webhooks headers ({SW_ID}, {SW_TIMESTAMP}, "
                f"{SW_SIGNATURE})"
            ) from None


SCHEMES: dict[str, Callable[[Request, str], None]] = {
    "mlflow-hmac": verify_mlflow,
    "standard-webhooks": verify_standard_webhooks,
    "token": verify_token,
    "huggingface-secret": verify_huggingface,
    "databricks-hmac": verify_databricks,
    "standard-webhooks-or-token": verify_standard_webhooks_or_token,
}


def verify(request: Request, secret: str, scheme: str) -> None:
    """Verify with the named scheme (a server config may choose one per source)."""
    try:
        check = SCHEMES[scheme]
    except KeyError:
        from ..errors import ConfigError, suggest

        raise ConfigError(f"unknown auth scheme {scheme!r}." + suggest(scheme, SCHEMES), field="auth_scheme") from None
    check(request, secret)
