"""Named leases (one poller per source across replicas): acquire, renew, expire, release, list."""

from __future__ import annotations

import time

import pytest

from pipeline_plugin.events import ModelVersionEvent


def test_one_owner_holds_a_lease_until_it_expires_or_is_released(any_inbox):
    inbox = any_inbox()
    other = any_inbox()  # another replica: its own connection to the same inbox
    assert inbox.try_lease("poll:mlflow", "a", 0.8, {"cursor": 1})
    assert not other.try_lease("poll:mlflow", "b", 30)
    assert inbox.try_lease("poll:mlflow", "a", 0.8, {"cursor": 2})  # renewed, status updated
    held = other.leases()
    assert [(h["name"], h["owner"], h["status"]) for h in held] == [("poll:mlflow", "a", {"cursor": 2})]
    assert held[0]["until"] > time.time()
    assert other.try_lease("poll:other", "b", 30)  # a different name is free
    time.sleep(1.0)
    assert other.try_lease("poll:mlflow", "b", 30)  # a's lease expired: b takes it over
    assert not inbox.try_lease("poll:mlflow", "a", 30)
    inbox.release_lease("poll:mlflow", "a")  # not a's: nothing happens
    assert {h["name"]: h["owner"] for h in inbox.leases()} == {"poll:mlflow": "b", "poll:other": "b"}
    other.release_lease("poll:mlflow", "b")
    assert inbox.try_lease("poll:mlflow", "a", 30)


def test_lease_arguments_are_checked(any_inbox):
    inbox = any_inbox()
    with pytest.raises(ValueError, match="seconds"):
        inbox.try_lease("x", "a", 0)
    with pytest.raises(ValueError, match="owner"):
        inbox.try_lease("x", "", 5)


def test_a_claim_is_kept_while_a_long_dispatch_runs(any_inbox):
    from pipeline_plugin.inbox.leases import keep_claimed

    inbox, other = any_inbox(), any_inbox()
    [eid] = inbox.put("mlflow", [ModelVersionEvent.from_dict({"source": "mlflow", "kind": "model_version.created",
                                                              "model": "churn", "version": "1", "delivery_id": "d1"})])
    a, b = inbox.new_owner(), other.new_owner()
    [claimed] = inbox.claim(a, lease=0.9)
    with keep_claimed(inbox, eid, a, seconds=0.9):
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:  # three leases long: never taken over meanwhile
            assert other.claim(b) == []
            time.sleep(0.1)
    time.sleep(1.0)
    assert [c.id for c in other.claim(b)] == [eid]
