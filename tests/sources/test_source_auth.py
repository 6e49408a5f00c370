"""Authenticity schemes: real HMACs, the Standard Webhooks published vector, replay window, key
rotation, and error messages that say what is wrong without leaking the secret."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from source_helpers import MLFLOW_SAMPLE_SECRET, all_samples, load_sample, make_request

from pipeline_plugin.errors import AuthenticationError, ConfigError
from pipeline_plugin.sources import auth, get_source

# Published by the Standard Webhooks Python library (standardwebhooks tests).
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TS = "1614265330"
SW_BODY = b'{"test": 2432232314}'
SW_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def independent_sign(key: bytes, msg_id: str, ts: str, body: bytes) -> str:
    """Written out here (not auth.sign) so the tests do not check the code against itself."""
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def sw_request(sig: str = SW_SIG, body: bytes = SW_BODY, ts: str = SW_TS, now: float = float(SW_TS), **extra):
    headers = {"webhook-id": SW_ID, "webhook-timestamp": ts, "webhook-signature": sig, **extra}
    return make_request(body, headers, now=now)


# ---- Standard Webhooks ------------------------------------------------------------------------
def test_standard_webhooks_published_vector_passes():
    auth.SCHEMES["standard-webhooks"](sw_request(), SW_SECRET)
    assert auth.sign(auth.standard_webhooks_key(SW_SECRET), SW_ID, SW_TS, SW_BODY) == SW_SIG


def test_standard_webhooks_headers_are_case_insensitive():
    req = make_request(SW_BODY, {"Webhook-Id": SW_ID, "Webhook-Timestamp": SW_TS, "Webhook-Signature": SW_SIG},
                       now=float(SW_TS))
    auth.verify(req, SW_SECRET, "standard-webhooks")


@pytest.mark.parametrize(
    "header",
    [
        f"v1,Zm9vYmFy {SW_SIG}",  # old key first, new key second (rotation)
        f"{SW_SIG} v1,Zm9vYmFy",
        f"v1a,c29tZWFzeW1tZXRyaWM= {SW_SIG}",  # an asymmetric signature we do not check
    ],
)
def test_key_rotation_any_listed_v1_signature_matches(header):
    auth.verify(sw_request(sig=header), SW_SECRET, "standard-webhooks")


def test_rotation_header_with_only_wrong_signatures_fails():
    with pytest.raises(AuthenticationError, match="bad signature"):
        auth.verify(sw_request(sig="v1,Zm9vYmFy v1,YmFyYmF6"), SW_SECRET, "standard-webhooks")


def test_non_whsec_secret_is_used_as_raw_text():
    secret = "plain-shared-secret"
    body = b'{"type": "x"}'
    sig = independent_sign(secret.encode(), SW_ID, SW_TS, body)
    auth.verify(sw_request(sig=sig, body=body), secret, "standard-webhooks")
    # ...and not as base64: the same secret with whsec_ prefix means different key bytes
    with pytest.raises(AuthenticationError):
        auth.verify(sw_request(sig=sig, body=body), "whsec_" + base64.b64encode(b"other").decode(), "standard-webhooks")


def test_whsec_secret_with_broken_base64_is_reported_without_the_secret():
    with pytest.raises(AuthenticationError) as info:
        auth.verify(sw_request(), "whsec_!!!not-base64!!!", "standard-webhooks")
    assert "not valid base64" in str(info.value)
    assert "not-base64" not in str(info.value)


@pytest.mark.parametrize(
    "offset, ok",
    [(0, True), (300, True), (-300, True), (301, False), (-301, False), (86400, False)],
)
def test_replay_window_is_five_minutes_both_ways(offset, ok):
    req = sw_request(now=float(SW_TS) + offset)
    if ok:
        auth.verify(req, SW_SECRET, "standard-webhooks")
    else:
        with pytest.raises(AuthenticationError, match="stale timestamp"):
            auth.verify(req, SW_SECRET, "standard-webhooks")


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_named(missing):
    headers = {"webhook-id": SW_ID, "webhook-timestamp": SW_TS, "webhook-signature": SW_SIG}
    del headers[missing]
    with pytest.raises(AuthenticationError, match=f"missing header {missing}"):
        auth.verify(make_request(SW_BODY, headers, now=float(SW_TS)), SW_SECRET, "standard-webhooks")


@pytest.mark.parametrize("ts", ["abc", "1614265330.5", "-1614265330", "1" * 40, "１６１４２６５３３０"])
def test_malformed_timestamp_is_rejected(ts):
    with pytest.raises(AuthenticationError, match="unix seconds"):
        auth.verify(sw_request(ts=ts), SW_SECRET, "standard-webhooks")


def test_tampered_body_fails_and_message_leaks_nothing():
    with pytest.raises(AuthenticationError) as info:
        auth.verify(sw_request(body=b'{"test": 2432232315}'), SW_SECRET, "standard-webhooks")
    message = str(info.value)
    assert "bad signature" in message
    expected = independent_sign(auth.standard_webhooks_key(SW_SECRET), SW_ID, SW_TS, b'{"test": 2432232315}')
    for secret_text in (SW_SECRET, SW_SECRET[6:], expected, expected[3:], SW_SIG[3:]):
        assert secret_text not in message


def test_signature_without_v1_is_explained():
    with pytest.raises(AuthenticationError, match="no 'v1,<base64>' signature"):
        auth.verify(sw_request(sig="g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="), SW_SECRET, "standard-webhooks")


def test_empty_secret_never_verifies():
    with pytest.raises(AuthenticationError, match="no secret is configured"):
        auth.verify(sw_request(), "", "standard-webhooks")


# ---- MLflow -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", all_samples("mlflow"))
def test_recorded_mlflow_deliveries_verify_with_their_secret(name):
    req = load_sample(name)
    req.now = float(req.headers["X-MLflow-Timestamp"]) + 2
    auth.verify(req, MLFLOW_SAMPLE_SECRET, "mlflow-hmac")


@pytest.mark.parametrize("name", all_samples("mlflow"))
def test_recorded_mlflow_delivery_fails_with_wrong_secret_tamper_or_late_replay(name):
    req = load_sample(name)
    ts = float(req.headers["X-MLflow-Timestamp"])
    req.now = ts
    with pytest.raises(AuthenticationError, match="bad signature"):
        auth.verify(req, MLFLOW_SAMPLE_SECRET + "x", "mlflow-hmac")
    tampered = load_sample(name, now=ts)
    tampered.body = tampered.body.replace(b"churn-model", b"churn-modem")
    with pytest.raises(AuthenticationError, match="bad signature"):
        auth.verify(tampered, MLFLOW_SAMPLE_SECRET, "mlflow-hmac")
    late = load_sample(name, now=ts + 301)  # MLflow retries with the same timestamp: a late replay
    with pytest.raises(AuthenticationError, match="stale timestamp"):
        auth.verify(late, MLFLOW_SAMPLE_SECRET, "mlflow-hmac")
    relabelled = load_sample(name, now=ts)
    relabelled.headers["X-MLflow-Delivery-Id"] = "another-id"  # the id is covered by the signature
    with pytest.raises(AuthenticationError, match="bad signature"):
        auth.verify(relabelled, MLFLOW_SAMPLE_SECRET, "mlflow-hmac")


def test_mlflow_signatures_made_by_mlflow_itself_verify():
    from mlflow.webhooks.delivery import _generate_hmac_signature

    cases = [
        ("s3cr3t", '{"entity": "model_version", "action": "created"}'),
        ("ünïcode-secret", '{"data": {"name": "modèle"}}'),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "{}"),  # MLflow uses even whsec_ text raw
    ]
    for secret, payload in cases:
        sig = _generate_hmac_signature(secret, "d-1", "1795577168", payload)
        req = make_request(payload.encode(), {"X-MLflow-Delivery-Id": "d-1", "X-MLflow-Timestamp": "1795577168",
                                              "X-MLflow-Signature": sig}, now=1795577168.0)
        auth.verify(req, secret, "mlflow-hmac")


def test_mlflow_without_signature_header_says_so():
    req = load_sample(all_samples("mlflow")[0])
    del req.headers["x-mlflow-signature"]
    with pytest.raises(AuthenticationError, match="missing header X-MLflow-Signature"):
        auth.verify(req, MLFLOW_SAMPLE_SECRET, "mlflow-hmac")


# ---- token ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers, query",
    [
        ({"Authorization": "Bearer tok-123"}, {}),
        ({"authorization": "bearer tok-123"}, {}),
        ({}, {"token": "tok-123"}),
        ({"Authorization": "Basic " + base64.b64encode(b"eventbridge:tok-123").decode()}, {}),
    ],
)
def test_token_accepted_forms(headers, query):
    auth.verify(make_request(b"{}", headers, query=query), "tok-123", "token")


@pytest.mark.parametrize(
    "headers, query, message",
    [
        ({}, {}, "missing token"),
        ({"Authorization": "Bearer tok-124"}, {}, "bad token"),
        ({}, {"token": "tok-12"}, "bad token"),
        ({"Authorization": "Token tok-123"}, {}, "must be 'Bearer <token>'"),
        ({"Authorization": "Basic %%%"}, {}, "not valid base64"),
        ({"Authorization": "Bearer tøk-123"}, {}, "bad token"),  # non-ASCII must not crash compare_digest
    ],
)
def test_token_rejections(headers, query, message):
    with pytest.raises(AuthenticationError, match=message) as info:
        auth.verify(make_request(b"{}", headers, query=query), "tok-123", "token")
    assert "tok-123" not in str(info.value)


def test_docker_registry_sample_bearer_header_verifies():
    req = load_sample("docker-distribution/01_push_manifest_v1.json")
    auth.verify(req, "research-token-123", "token")
    with pytest.raises(AuthenticationError):
        auth.verify(req, "research-token-124", "token")


# ---- Hugging Face -----------------------------------------------------------------------------
def test_huggingface_secret_header():
    auth.verify(make_request(b"{}", {"X-Webhook-Secret": "hf-s3cret"}), "hf-s3cret", "huggingface-secret")
    with pytest.raises(AuthenticationError, match="bad secret") as info:
        auth.verify(make_request(b"{}", {"X-Webhook-Secret": "hf-s3cre"}), "hf-s3cret", "huggingface-secret")
    assert "hf-s3cret" not in str(info.value)
    with pytest.raises(AuthenticationError, match="missing header X-Webhook-Secret"):
        auth.verify(make_request(b"{}", {}), "hf-s3cret", "huggingface-secret")
    with pytest.raises(AuthenticationError, match="bad secret"):  # surrounding spaces are not trimmed away
        auth.verify(make_request(b"{}", {"X-Webhook-Secret": " hf-s3cret"}), "hf-s3cret", "huggingface-secret")


def test_unknown_scheme_is_a_config_error_with_suggestion():
    with pytest.raises(ConfigError, match="Did you mean 'mlflow-hmac'"):
        auth.verify(make_request(b"{}"), "x", "mlflow-hmca")
    assert set(auth.SCHEMES) == {"mlflow-hmac", "standard-webhooks", "token", "huggingface-secret",
                                 "standard-webhooks-or-token", "databricks-hmac"}


def test_cloudevents_takes_a_standard_webhooks_signature_or_a_token():
    scheme = get_source("cloudevents").auth_scheme
    auth.verify(sw_request(), SW_SECRET, scheme)  # the published vector
    auth.verify(make_request(SW_BODY, {"Authorization": f"Bearer {SW_SECRET}"}), SW_SECRET, scheme)
    auth.verify(make_request(SW_BODY, {}, query={"token": SW_SECRET}), SW_SECRET, scheme)
    # a signature that does not verify is refused even with the right token beside it
    with pytest.raises(AuthenticationError, match="no signature matched|signature"):
        auth.verify(sw_request(sig="v1,Zm9vYmFy", Authorization=f"Bearer {SW_SECRET}"), SW_SECRET, scheme)
    with pytest.raises(AuthenticationError, match="missing token.*Standard Webhooks"):
        auth.verify(make_request(SW_BODY, {}), SW_SECRET, scheme)
    with pytest.raises(AuthenticationError, match="bad token"):
        auth.verify(make_request(SW_BODY, {"Authorization": "Bearer nope"}), SW_SECRET, scheme)


# ---- robustness -------------------------------------------------------------------------------
WEIRD = ["", " ", "v1,", "v1,%%%", "v1," + "A" * 5000, "ø", "\u202e", "Bearer", "Bearer ", "Basic", "Basic ø",
         "1614265330", "-1", "99999999999999999999", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v2,x"]
HEADER_NAMES = ["webhook-id", "webhook-timestamp", "webhook-signature", "X-MLflow-Signature", "X-MLflow-Delivery-Id",
                "X-MLflow-Timestamp", "Authorization", "X-Webhook-Secret", "X-Databricks-Signature"]


@pytest.mark.parametrize("scheme", sorted(auth.SCHEMES))
def test_garbage_headers_only_raise_authentication_error(scheme):
    import itertools
    import random

    rng = random.Random(scheme)
    for _ in range(400):
        headers = {name: rng.choice(WEIRD) for name in HEADER_NAMES if rng.random() < 0.7}
        query = {"token": rng.choice(WEIRD)} if rng.random() < 0.3 else {}
        req = make_request(bytes(rng.randrange(256) for _ in range(rng.randrange(40))), headers,
                           query=query, now=float(SW_TS))
        for secret in itertools.islice(itertools.cycle([SW_SECRET, "tok", "ø-secret"]), 3):
            try:
                auth.verify(req, secret, scheme)
            except AuthenticationError:
                pass
