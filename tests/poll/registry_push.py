"""Images pushed to a real registry as a client pushes them (Distribution API: blob upload, then the
manifest), without Docker: the poll tests' registry content."""

from __future__ import annotations

import hashlib
import json

import requests

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def push(registry: str, repository: str, tag: str, content: bytes) -> str:
    """An OCI image pushed as a client pushes it (blob upload, then the manifest); its digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"c": content.decode()}},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    start = requests.post(f"{registry}/v2/{repository}/blobs/uploads/", timeout=10)
    assert start.status_code == 202, start.text
    location = requests.compat.urljoin(registry, start.headers["Location"])
    sep = "&" if "?" in location else "?"
    done = requests.put(f"{location}{sep}digest={digest}", data=config, timeout=10,
                        headers={"Content-Type": "application/octet-stream"})
    assert done.status_code == 201, done.text
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST, "layers": [],
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest,
                                      "size": len(config)}}).encode()
    put = requests.put(f"{registry}/v2/{repository}/manifests/{tag}", data=manifest, timeout=10,
                       headers={"Content-Type": MANIFEST})
    assert put.status_code == 201, put.text
    return "sha256:" + hashlib.sha256(manifest).hexdigest()
