"""Hugging Face Hub: new tags and commits on model repos are versions; other scopes are not."""

from __future__ import annotations

import json

import pytest
from source_helpers import all_samples, fuzz_parser, load_sample, make_request, sample_path

from pipeline_plugin.errors import AuthenticationError, PayloadError
from pipeline_plugin.sources import get_source, receive

SOURCE = get_source("huggingface")
SAMPLE = "huggingface/01_repo_content_update_new_tag.json"
SHA = "575db8b7a51b6f85eb06eee540738584589f131c"


def body():
    return json.loads(sample_path(SAMPLE).read_text())["request"]["body"]


def test_recorded_update_gives_the_commit_and_the_new_tag():
    req = load_sample(SAMPLE, headers={"X-Webhook-Secret": "hf-secret", "Webhook-Id": "wh-1"})
    events = receive(SOURCE, req, "hf-secret")
    assert [(e.kind, e.version, e.tags["hf.ref"]) for e in events] == [
        ("model_version.created", SHA, "refs/heads/main"),
        ("model_version.created", "v2", "refs/tags/v2"),
    ]
    tag = events[1]
    assert tag.model == "acme-ml/churn-model"
    assert dict(tag.registry) == {"repository": "acme-ml/churn-model", "host": "huggingface.co"}
    assert tag.artifact_uri == f"hf://acme-ml/churn-model@{SHA}"
    assert tag.tags["license"] == "apache-2.0" and tag.tags["hf.sha"] == SHA
    assert [e.delivery_id for e in events] == ["wh-1#refs/heads/main", "wh-1#refs/tags/v2"]
    # the Hub sends no timestamp: the event carries the time it was received
    from datetime import datetime, timezone

    assert tag.time == datetime.fromtimestamp(req.now, timezone.utc).isoformat(timespec="seconds")


def test_wrong_secret_is_refused():
    with pytest.raises(AuthenticationError):
        receive(SOURCE, load_sample(SAMPLE), "hf-secret")  # the sample carries a placeholder


def test_tag_deletion_and_ignored_refs():
    doc = body()
    doc["updatedRefs"] = [
        {"ref": "refs/tags/v1", "oldSha": SHA, "newSha": None},
        {"ref": "refs/pr/3", "oldSha": None, "newSha": SHA},
        {"ref": "refs/heads/old", "oldSha": SHA, "newSha": None},
    ]
    assert [(e.kind, e.version) for e in SOURCE.parse(make_request(doc))] == [("model_version.deleted", "v1")]


def test_payload_without_updated_refs_uses_head_sha():
    doc = body()
    del doc["updatedRefs"]
    [event] = SOURCE.parse(make_request(doc))
    assert event.version == SHA


@pytest.mark.parametrize(
    "change",
    [
        {"event": {"action": "create", "scope": "repo"}},
        {"event": {"action": "update", "scope": "repo.config"}},
        {"event": {"action": "create", "scope": "discussion"}},
    ],
)
def test_non_content_events_give_nothing(change):
    doc = body()
    doc.update(change)
    assert SOURCE.parse(make_request(doc)) == []


def test_datasets_and_spaces_give_nothing():
    doc = body()
    doc["repo"]["type"] = "dataset"
    assert SOURCE.parse(make_request(doc)) == []


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.pop("repo"), "repo"),
        (lambda d: d["repo"].pop("name"), "repo.name"),
        (lambda d: d.update(updatedRefs={}), "updatedRefs"),
        (lambda d: d["updatedRefs"][1].update(ref=None), "updatedRefs[1].ref"),
        (lambda d: d["updatedRefs"][0].update(newSha=1), "updatedRefs[0].newSha"),
        (lambda d: d["repo"].update(tags=[1]), "repo.tags[0]"),
    ],
)
def test_bad_input_names_the_field(mutate, field):
    doc = body()
    mutate(doc)
    with pytest.raises(PayloadError) as info:
        SOURCE.parse(make_request(doc))
    assert info.value.field == field


@pytest.mark.parametrize("name", all_samples("huggingface"))
def test_fuzzed_deliveries_only_raise_payload_error(name):
    fuzz_parser(SOURCE.parse, load_sample(name))
