"""The model's own dependency files are used when the rule or CLI names none; the listener hands its
fetch.allowed_roots to every worker."""

from __future__ import annotations

from pathlib import Path

from pipeline_plugin.fetch import FetchedModel, fetch
from pipeline_plugin.server import Listener, load_config
from pipeline_plugin.stages.package import ModelRef, PackageSpec, model_dependencies


def _spec(tmp_path: Path, **kw) -> PackageSpec:
    return PackageSpec(models=[ModelRef("m", "1", tmp_path)], image="m:1", **kw)


def test_the_models_own_requirements_or_conda_file_fill_in(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "conda.yaml").write_text("dependencies: [python=3.11, {pip: [scikit-learn]}]\n")
    got = fetch(str(model), tmp_path / "d")
    assert (got.requirements, got.conda) == (None, model / "conda.yaml")
    (model / "requirements.txt").write_text("scikit-learn\n")
    got = fetch(str(model), tmp_path / "d")
    assert (got.requirements, got.conda) == (model / "requirements.txt", None)  # pip's file first

    said: list[str] = []
    spec = _spec(tmp_path, entry_script=tmp_path / "score.py")
    model_dependencies(spec, [got], said.append)
    assert spec.requirements == model / "requirements.txt" and "model's own requirements" in said[0]
    named = _spec(tmp_path, entry_script=tmp_path / "score.py", requirements=tmp_path / "mine.txt")
    model_dependencies(named, [got], said.append)
    assert named.requirements == tmp_path / "mine.txt" and named.conda is None  # the rule's choice stands
    no_code = _spec(tmp_path)
    model_dependencies(no_code, [got], said.append)
    assert no_code.requirements is None  # the generated MLflow scorer reads them itself
    other = FetchedModel(uri="x", path=tmp_path, backend="local", requirements=tmp_path / "r.txt")
    two = _spec(tmp_path, entry_script=tmp_path / "score.py")
    model_dependencies(two, [got, other], said.append)
    assert two.requirements is None and "pass --requirements" in said[-1]


def test_the_listener_gives_its_roots_to_the_workers(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "listener.yml").write_text("fetch:\n  allowed_roots: [models]\n")
    listener = Listener(tmp_path / "state", config=load_config(tmp_path / "listener.yml"), environ={}, workers=2)
    listener.start()
    try:
        assert [w.allowed_roots for w in listener.workers] == [(str((tmp_path / "models").resolve()),)] * 2
    finally:
        listener.stop()
