"""docker-registry notifications: a manifest push is image.pushed; pull, delete, blobs are not."""

from __future__ import annotations

import copy
import json

import pytest
from source_helpers import all_samples, fuzz_parser, load_sample, make_request, sample_path

from pipeline_plugin.errors import PayloadError
from pipeline_plugin.sources import get_source, receive

SOURCE = get_source("docker-registry")
SAMPLE = "docker-distribution/01_push_manifest_v1.json"
DIGEST = "sha256:4d291544d7e2e0e1c8e11b63e5a7bc5bbb9584743f75bf01732e53f0b9a3d2c4"


def envelope():
    return json.loads(sample_path(SAMPLE).read_text())["body"]


def test_recorded_manifest_push_is_image_pushed():
    [event] = receive(SOURCE, load_sample(SAMPLE), "research-token-123")
    assert (event.kind, event.model, event.version) == ("image.pushed", "research/churn-model-server", "v1")
    assert event.image_uri == "127.0.0.1:5001/research/churn-model-server:v1"
    assert event.digest == DIGEST
    assert dict(event.registry) == {"repository": "research/churn-model-server", "host": "127.0.0.1:5001"}
    assert event.delivery_id == "d9f047ac-3ebf-4e20-b6db-28cdab1a40e3"


def test_configured_host_names_the_image():
    [event] = SOURCE.parse(load_sample(SAMPLE, options={"host": "registry.internal:5000"}))
    assert event.image_uri == "registry.internal:5000/research/churn-model-server:v1"


def test_push_by_digest_uses_the_digest_as_version():
    doc = envelope()
    del doc["events"][0]["target"]["tag"]
    [event] = SOURCE.parse(make_request(doc))
    assert event.version == DIGEST and event.image_uri.endswith(f"research/churn-model-server@{DIGEST}")


@pytest.mark.parametrize(
    "action, media_type",
    [
        ("pull", "application/vnd.docker.distribution.manifest.v2+json"),
        ("delete", "application/vnd.docker.distribution.manifest.v2+json"),
        ("mount", "application/vnd.docker.image.rootfs.diff.tar.gzip"),
        ("push", "application/vnd.docker.image.rootfs.diff.tar.gzip"),
        ("push", "application/vnd.docker.container.image.v1+json"),
        ("push", "application/octet-stream"),
    ],
)
def test_pull_delete_and_blob_pushes_are_not_new_versions(action, media_type):
    doc = envelope()
    doc["events"][0]["action"] = action
    doc["events"][0]["target"]["mediaType"] = media_type
    assert SOURCE.parse(make_request(doc)) == []


@pytest.mark.parametrize("media_type", ["application/vnd.oci.image.manifest.v1+json",
                                        "application/vnd.oci.image.index.v1+json",
                                        "application/vnd.docker.distribution.manifest.list.v2+json"])
def test_oci_manifests_and_indexes_count(media_type):
    doc = envelope()
    doc["events"][0]["target"]["mediaType"] = media_type
    assert [e.kind for e in SOURCE.parse(make_request(doc))] == ["image.pushed"]


def test_mixed_envelope_keeps_only_manifest_pushes_each_with_its_own_id():
    doc = envelope()
    pull = copy.deepcopy(doc["events"][0])
    pull.update(action="pull", id="pull-1")
    second = copy.deepcopy(doc["events"][0])
    second["id"] = "push-2"
    second["target"]["tag"] = "v2"
    doc["events"] = [pull, doc["events"][0], second]
    assert [(e.version, e.delivery_id) for e in SOURCE.parse(make_request(doc))] == [
        ("v1", "d9f047ac-3ebf-4e20-b6db-28cdab1a40e3"), ("v2", "push-2")]


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.pop("events"), "events"),
        (lambda d: d.update(events={}), "events"),
        (lambda d: d["events"][0]["target"].pop("repository"), "events[0].target.repository"),
        (lambda d: d["events"][0]["target"].update(digest=None), "events[0].target.digest"),
        (lambda d: d["events"][0].update(target=[]), "events[0].target"),
        (lambda d: d["events"][0].update(action=1), "events[0].action"),
        (lambda d: d["events"].insert(0, "x"), "events[0]"),
    ],
)
def test_bad_input_names_the_json_path(mutate, field):
    doc = envelope()
    mutate(doc)
    with pytest.raises(PayloadError) as info:
        SOURCE.parse(make_request(doc))
    assert info.value.field == field


@pytest.mark.parametrize("name", all_samples("docker-distribution"))
def test_fuzzed_deliveries_only_raise_payload_error(name):
    fuzz_parser(SOURCE.parse, load_sample(name))
