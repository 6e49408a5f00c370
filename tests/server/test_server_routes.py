"""The listener's HTTP routes, in-process (Starlette's test client over the real app and inbox):
authentication, durable de-duplicated storage, bad input as 4xx naming the field, limits, handshake,
health and metrics."""

from __future__ import annotations

import json
import logging
import random
import time

import pytest
from starlette.testclient import TestClient

from pipeline_plugin.errors import ConfigError
from pipeline_plugin.inbox import Inbox
from pipeline_plugin.server import MAX_BODY, Listener, create_app, load_config
from pipeline_plugin.sources.auth import sign

SECRET = "s3cr3t-for-routes"
SAMPLE = {
    "entity": "model_version",
    "action": "created",
    "timestamp": "2026-11-25T03:26:08.314052+00:00",
    "data": {
        "name": "churn-model",
        "version": "1",
        "source": "models:/m-7b514f5588804e549cfdbb1699921ceb",
        "run_id": None,
        "tags": {"stage_hint": "candidate"},
        "description": None,
    },
}


def mlflow_delivery(payload=None, secret=SECRET, delivery_id="d-1", timestamp=None, raw: bytes | None = None):
    body = raw if raw is not None else json.dumps(payload or SAMPLE).encode()
    ts = str(int(timestamp if timestamp is not None else time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": sign(secret.encode(), delivery_id, ts, body),
    }
    return body, headers


def client(tmp_path, env=None, insecure=False, config=None):
    listener = Listener(
        tmp_path / "state",
        environ={"PIPELINE_PLUGIN_MLFLOW_SECRET": SECRET} if env is None else env,
        insecure_no_auth=insecure,
        config=config,
        start_worker=False,
    )
    return listener, TestClient(create_app(listener), raise_server_exceptions=False)


def test_signed_delivery_is_stored_once(tmp_path):
    listener, c = client(tmp_path)
    body, headers = mlflow_delivery()
    r = c.post("/webhooks/mlflow", content=body, headers=headers)
    assert r.status_code == 200, r.text
    [eid] = r.json()["stored"]
    assert r.json()["duplicate"] is False
    # durable: a fresh inbox on the same state dir (another connection) has it
    stored = Inbox(tmp_path / "state").get(eid)
    assert (stored.event.model, stored.event.version, stored.event.kind) == ("churn-model", "1", "model_version.created")
    assert stored.event.tags == {"stage_hint": "candidate"}
    # MLflow retries with the same delivery id, timestamp and signature
    again = c.post("/webhooks/mlflow", content=body, headers=headers)
    assert again.status_code == 200 and again.json() == {"stored": [eid], "duplicate": True}
    # the same change under a new delivery id is the same event too
    body2, headers2 = mlflow_delivery(delivery_id="d-2")
    assert c.post("/webhooks/mlflow", content=body2, headers=headers2).json() == {"stored": [eid], "duplicate": True}
    assert len(listener.inbox.list()) == 1


@pytest.mark.parametrize(
    "case",
    ["wrong-secret", "tampered-body", "stale", "no-signature"],
)
def test_failed_authentication_is_401_and_stores_nothing(tmp_path, case):
    listener, c = client(tmp_path)
    if case == "wrong-secret":
        body, headers = mlflow_delivery(secret="not-the-secret")
    elif case == "tampered-body":
        body, headers = mlflow_delivery()
        body = body.replace(b'"1"', b'"2"')
    elif case == "stale":
        body, headers = mlflow_delivery(timestamp=time.time() - 400)
    else:
        body, headers = mlflow_delivery()
        del headers["X-MLflow-Signature"]
    r = c.post("/webhooks/mlflow", content=body, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"] == "AuthenticationError"
    assert SECRET not in r.text
    assert listener.inbox.list() == []


def test_a_source_without_secret_is_refused_unless_insecure(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    listener, c = client(tmp_path, env={})
    body, headers = mlflow_delivery()
    r = c.post("/webhooks/mlflow", content=body, headers=headers)
    assert r.status_code == 401 and "PIPELINE_PLUGIN_MLFLOW_SECRET" in r.json()["message"]
    assert listener.inbox.list() == []

    listener, c = client(tmp_path / "insecure", env={}, insecure=True)
    assert "INSECURE" in caplog.text and "mlflow" in caplog.text
    r = c.post("/webhooks/mlflow", content=b'{"entity": "model_version", "action": "created", "data": '
               b'{"name": "m", "version": "2", "source": "x"}}', headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and len(listener.inbox.list()) == 1


def test_secrets_are_never_logged(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    listener, c = client(tmp_path)
    body, headers = mlflow_delivery()
    c.post("/webhooks/mlflow", content=body, headers=headers)
    c.post("/webhooks/mlflow", content=body, headers={**headers, "X-MLflow-Signature": "v1,AAAA"})
    assert caplog.records and SECRET not in caplog.text
    assert headers["X-MLflow-Signature"] not in caplog.text


@pytest.mark.parametrize(
    "raw, field",
    [
        (b"{not json", "(body)"),
        (b"[1, 2]", None),
        (json.dumps({**SAMPLE, "data": {**SAMPLE["data"], "version": ["1"]}}).encode(), "version"),
        (json.dumps({**SAMPLE, "data": {"version": "1"}}).encode(), "name"),
        (json.dumps({**SAMPLE, "data": "nope"}).encode(), "data"),
    ],
)
def test_bad_input_is_400_naming_the_field(tmp_path, raw, field):
    listener, c = client(tmp_path)
    body, headers = mlflow_delivery(raw=raw)
    r = c.post("/webhooks/mlflow", content=body, headers=headers)
    assert r.status_code == 400, r.text
    data = r.json()
    assert data["error"] == "PayloadError" and data["message"]
    if field:
        assert field in (data["field"] or "")
    assert listener.inbox.list() == []


def test_a_lone_surrogate_escape_is_400_naming_the_field_and_stores_nothing(tmp_path):
    """Valid JSON, but "\udc00" is no character and cannot be stored: a signed delivery holding
    one is refused with the field's path (a 500 would make the sender retry it forever)."""
    listener, c = client(tmp_path)
    raw = json.dumps({**SAMPLE, "data": {**SAMPLE["data"], "tags": {"team": "ml\udc00"}}}).encode()
    assert b"\\udc00" in raw
    body, headers = mlflow_delivery(raw=raw)
    r = c.post("/webhooks/mlflow", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "(body).data.tags.team" and "surrogate" in r.json()["message"]
    assert listener.inbox.list() == []
    # a complete pair (an emoji written as two escapes) is text, and is stored
    good = json.dumps({**SAMPLE, "data": {**SAMPLE["data"], "tags": {"team": "ml\ud83d\ude00"}}}).encode()
    body, headers = mlflow_delivery(raw=good, delivery_id="d-2")
    assert c.post("/webhooks/mlflow", content=body, headers=headers).status_code == 200
    [stored] = listener.inbox.list()
    assert stored.event.tags["team"] == "ml\U0001F600"


@pytest.mark.parametrize("raw_bytes", [b"\xed\xa0\x80", b"\xed\xb0\x80", b"\xed\xa0\xbd\xed\xb8\x80"])
def test_a_surrogate_s_raw_bytes_are_400_not_a_retry_forever(tmp_path, raw_bytes):
    """ED A0 80 is not UTF-8 (a surrogate's own bytes, or CESU-8's pair): json.loads lets it through,
    the store could not encode it (503 retry: true forever). It is a 400 naming the field."""
    listener, c = client(tmp_path)
    raw = json.dumps({**SAMPLE, "data": {**SAMPLE["data"], "tags": {"team": "ml"}}}).encode()
    raw = raw.replace(b'"ml"', b'"ml' + raw_bytes + b'"')
    body, headers = mlflow_delivery(raw=raw)
    r = c.post("/webhooks/mlflow", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "(body).data.tags.team" and "surrogate" in r.json()["message"]
    assert listener.inbox.list() == []


def test_garbage_never_gives_a_500(tmp_path):
    listener, c = client(tmp_path, env={}, insecure=True)
    rng = random.Random(7)
    shapes = [None, 1, "x", [], {}, {"entity": 1}, {"data": {"name": None}}, {"entity": "model_version", "action": []}]
    for i in range(60):
        if i % 3 == 0:
            body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        else:
            base = json.loads(json.dumps(SAMPLE))
            key = rng.choice(["entity", "action", "data", "timestamp"])
            base[key] = rng.choice(shapes)
            if isinstance(base.get("data"), dict) and rng.random() < 0.5:
                base["data"][rng.choice(["name", "version", "tags", "source"])] = rng.choice(shapes)
            body = json.dumps(base).encode()
        for source in listener.sources:
            r = c.post(f"/webhooks/{source}", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code < 500, (source, body, r.text)
    assert c.get("/healthz").status_code == 200


def test_over_one_mib_is_413_by_header_and_by_stream(tmp_path):
    listener, c = client(tmp_path)
    big = b"{" + b" " * MAX_BODY + b"}"
    body, headers = mlflow_delivery(raw=big)
    r = c.post("/webhooks/mlflow", content=body, headers=headers)
    assert r.status_code == 413 and r.json()["limit"] == MAX_BODY

    def chunks():  # no Content-Length: chunked transfer, counted as it streams
        for _ in range(20):
            yield b" " * (64 * 1024)

    r = c.post("/webhooks/mlflow", content=chunks(), headers={k: v for k, v in headers.items()})
    assert r.status_code == 413
    assert listener.inbox.list() == []
    # exactly at the limit is fine (and then fails as bad JSON, not as too large)
    body, headers = mlflow_delivery(raw=b" " * MAX_BODY)
    assert c.post("/webhooks/mlflow", content=body, headers=headers).status_code == 400


def test_unknown_source_is_404_listing_the_valid_ones(tmp_path):
    listener, c = client(tmp_path)
    r = c.post("/webhooks/jenkins", content=b"{}")
    assert r.status_code == 404
    assert "mlflow" in r.json()["valid"] and "mlflow" in r.json()["message"]
    assert c.get("/nothing").status_code == 404
    assert c.get("/webhooks/mlflow").status_code == 405


def test_healthz_and_metrics(tmp_path):
    listener, c = client(tmp_path)
    health = c.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    body, headers = mlflow_delivery()
    c.post("/webhooks/mlflow", content=body, headers=headers)
    c.post("/webhooks/mlflow", content=body, headers=headers)
    c.post("/webhooks/mlflow", content=body, headers={**headers, "X-MLflow-Signature": "v1,AAAA"})
    c.post("/webhooks/nope", content=b"{}")
    listener.inbox.record_runs(listener.inbox.list()[0].id, 0, [{"rule_name": "r", "provider": "local"}], status="matched")
    r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'pipeline_plugin_deliveries_total{outcome="accepted",source="mlflow"} 1.0' in text
    assert 'pipeline_plugin_deliveries_total{outcome="duplicate",source="mlflow"} 1.0' in text
    assert 'pipeline_plugin_deliveries_total{outcome="unauthorized",source="mlflow"} 1.0' in text
    assert 'pipeline_plugin_deliveries_total{outcome="unknown_source",source="(unknown)"} 1.0' in text
    assert 'pipeline_plugin_ack_seconds_count{source="mlflow"} 2.0' in text
    assert "pipeline_plugin_inbox_depth 1.0" in text
    assert 'pipeline_plugin_pipeline_runs{status="recorded"} 1.0' in text
    assert 'pipeline_plugin_events{status="matched"} 1.0' in text


def test_config_names_the_secret_variable_and_the_scheme(tmp_path):
    cfg = tmp_path / "listener.yml"
    cfg.write_text(
        "sources:\n  mlflow:\n    secret_env: MY_MLFLOW_HOOK_KEY\n    auth: standard-webhooks\n"
        "    tracking_uri: http://mlflow.internal:5000\n"
    )
    config = load_config(cfg)
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    listener, c = client(tmp_path, env={"MY_MLFLOW_HOOK_KEY": secret}, config=config)
    body = json.dumps(SAMPLE).encode()
    ts = str(int(time.time()))
    import base64

    key = base64.b64decode(secret[len("whsec_"):])
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": ts,
        # key rotation: an old signature first, then the valid one
        "webhook-signature": "v1,b2xkc2lnbmF0dXJl " + sign(key, "msg_1", ts, body),
    }
    r = c.post("/webhooks/mlflow", content=body, headers=headers)
    assert r.status_code == 200, r.text
    event = listener.inbox.get(r.json()["stored"][0]).event
    assert event.registry.get("tracking_uri") == "http://mlflow.internal:5000"
    # MLflow's own scheme is not accepted once the config picks another
    body2, headers2 = mlflow_delivery(secret=secret, delivery_id="other")
    assert c.post("/webhooks/mlflow", content=body2, headers=headers2).status_code == 401


@pytest.mark.parametrize(
    "text, message",
    [
        ("sources:\n  mlflow:\n    secret_evn: X\n", "did you mean 'secret_env'"),
        ("sources:\n  mlfow: {}\n", "did you mean 'mlflow'"),
        ("sources:\n  mlflow:\n    auth: hmac\n", "unknown scheme 'hmac'"),
        ("source: {}\n", "did you mean 'sources'"),
        ("sources: [1]\n", "'sources' must map"),
        ("{{{", "not valid YAML"),
    ],
)
def test_config_mistakes_fail_at_load(tmp_path, text, message):
    cfg = tmp_path / "listener.yml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert message.lower() in err.value.message.lower() and str(cfg) in err.value.message


def test_a_replayed_delivery_cannot_change_the_tracking_uri(tmp_path):
    """MLflow signs the body, not the URL: a captured delivery re-sent with another ?tracking_uri=
    is refused (400, nothing stored), and the genuine delivery that follows is still accepted."""
    listener, c = client(tmp_path)
    body, headers = mlflow_delivery(delivery_id="d-replay")
    r = c.post("/webhooks/mlflow?tracking_uri=http://evil.example:5000", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "?tracking_uri" and "tracking_uris" in r.json()["message"]
    assert listener.inbox.list() == []
    r = c.post("/webhooks/mlflow", content=body, headers=headers)
    assert r.status_code == 200 and not r.json().get("duplicate"), r.text
    [stored] = listener.inbox.list()
    assert "tracking_uri" not in stored.event.registry


def test_the_query_picks_only_among_the_servers_the_config_lists(tmp_path):
    cfg = tmp_path / "listener.yml"
    cfg.write_text("sources:\n  mlflow:\n    tracking_uris: [http://mlflow-a:5000, http://mlflow-b:5000]\n")
    listener, c = client(tmp_path, config=load_config(cfg))
    body, headers = mlflow_delivery(delivery_id="d-1")
    # a captured delivery for server A, replayed for server B: a delivery of its own, so A's genuine
    # delivery is never swallowed as B's duplicate
    r = c.post("/webhooks/mlflow?tracking_uri=http://mlflow-b:5000", content=body, headers=headers)
    assert r.status_code == 200, r.text
    r = c.post("/webhooks/mlflow?tracking_uri=http://mlflow-a:5000", content=body, headers=headers)
    assert r.status_code == 200 and not r.json().get("duplicate"), r.text
    servers = sorted(e.event.registry["tracking_uri"] for e in listener.inbox.list())
    assert servers == ["http://mlflow-a:5000", "http://mlflow-b:5000"]
    assert c.post("/webhooks/mlflow?tracking_uri=http://mlflow-c:5000", content=body, headers=headers).status_code == 400


def test_tracking_uris_must_be_a_list_of_urls(tmp_path):
    cfg = tmp_path / "listener.yml"
    cfg.write_text("sources:\n  mlflow:\n    tracking_uris: http://mlflow-a:5000\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "tracking_uris" in err.value.message and "list" in err.value.message
