"""Unit tests of the package stage's pieces that need no Docker: flag parsing, model layout and
digest, requirements and conda handling, Dockerfile generation, no-code detection."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline_plugin import cli
from pipeline_plugin.builders import conda, docker as builder, wheelhouse
from pipeline_plugin.errors import ConfigError
from pipeline_plugin.stages.package import ModelRef, PackageSpec, parse_model

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "churn"


# ---------------------------------------------------------------- --model and --image

def test_model_flag_parses_name_version_and_path(tmp_path):
    ref = parse_model(f"churn:12={tmp_path}/model.pkl")
    assert ref == ModelRef("churn", "12", tmp_path / "model.pkl")


@pytest.mark.parametrize(
    "value, says",
    [
        ("churn:1", "expected NAME:VERSION=PATH"),
        ("churn=model.pkl", "must be NAME:VERSION"),
        ("churn:1=", "expected NAME:VERSION=PATH"),
        (":1=model.pkl", "must be NAME:VERSION"),
        ("ch urn:1=model.pkl", "model name 'ch urn'"),
        ("churn:1/2=model.pkl", "version '1/2'"),
    ],
)
def test_bad_model_flag_names_flag_value_and_fix(value, says):
    with pytest.raises(ConfigError) as info:
        parse_model(value)
    message = info.value.message
    assert message.startswith(f"--model '{value}'")
    assert says in message
    assert "e.g." in message  # the fix: an example of the right syntax


def test_cli_bad_model_flag_exits_2_with_the_message(capsys):
    code = cli.main(["package", "--model", "churn-1", "--entry-script", "score.py", "--image", "x:1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--model 'churn-1'" in err and "NAME:VERSION=URI" in err


def test_model_flag_takes_registry_uris_and_render_style_versions():
    from pipeline_plugin.stages.package import split_model

    assert split_model("churn:3+g1=models:/churn/3") == ("churn", "3+g1", "models:/churn/3")
    assert split_model("acme:v2=hf://acme/churn@v2") == ("acme", "v2", "hf://acme/churn@v2")  # // kept as typed
    assert parse_model("churn:3+g1=./m").version == "3+g1"


def test_cli_requirements_and_conda_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["package", "--model", "a:1=x", "--requirements", "r.txt", "--conda", "e.yml", "--image", "x:1"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("image", ["churn", "Churn:1", "churn:", "churn:bad tag", "-x:1"])
def test_bad_image_reference_is_rejected_with_an_example(image):
    with pytest.raises(ConfigError) as info:
        builder.split_image(image)
    assert info.value.message.startswith(f"--image '{image}'")
    assert "e.g." in info.value.message


def test_image_reference_with_registry_port():
    assert builder.split_image("localhost:5000/team/churn:3") == ("localhost:5000/team/churn", "3")


def _spec(tmp_path, **kw) -> PackageSpec:
    model = tmp_path / "model.pkl"
    model.write_bytes(b"model")
    script = tmp_path / "score.py"
    script.write_text("def init(): pass\ndef run(data): return data\n")
    values = dict(models=[ModelRef("churn", "1", model)], image="churn:1", entry_script=script)
    values.update(kw)
    return PackageSpec(**values)


def test_validate_names_the_missing_entry_script(tmp_path):
    spec = _spec(tmp_path, entry_script=Path("nope.py"), source_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"--entry-script nope.py: no such file \(looked in --source-dir"):
        builder.validate(spec)


def test_validate_rejects_missing_model_path_and_duplicates(tmp_path):
    spec = _spec(tmp_path)
    spec.models.append(ModelRef("churn", "2", tmp_path / "missing.pkl"))
    with pytest.raises(ConfigError, match=r"--model churn:2=.*missing.pkl: no such file or folder"):
        builder.validate(spec)
    spec = _spec(tmp_path)
    spec.models.append(spec.models[0])
    with pytest.raises(ConfigError, match="given twice"):
        builder.validate(spec)


def test_validate_no_code_needs_exactly_one_model(tmp_path):
    spec = _spec(tmp_path, entry_script=None)
    spec.models.append(ModelRef("other", "1", spec.models[0].path))
    with pytest.raises(ConfigError, match="no-code packaging serves exactly one model"):
        builder.validate(spec)


def test_validate_refuses_a_non_empty_generate_dockerfile_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="--generate-dockerfile .*not empty"):
        builder.validate(_spec(tmp_path, generate_dockerfile=out))


# ---------------------------------------------------------------- model layout and digest

def test_one_model_dir_is_the_models_own_folder():
    models = [ModelRef("churn", "3", Path("m.pkl"))]
    assert builder.model_dir_env(models) == "/var/azureml-app/azureml-models/churn/3"


def test_several_models_dir_holds_name_version_folders():
    models = [ModelRef("a", "1", Path("x")), ModelRef("b", "2", Path("y"))]
    assert builder.model_dir_env(models) == "/var/azureml-app/azureml-models"


def test_layout_keeps_the_registered_file_or_folder_name(tmp_path):
    (tmp_path / "model.pkl").write_bytes(b"p")
    folder = tmp_path / "outputs"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"w")
    (folder / "sub" / "vocab.txt").write_text("v")
    dest = tmp_path / "models"
    builder.layout_models([ModelRef("a", "1", tmp_path / "model.pkl"), ModelRef("b", "7", folder)], dest)
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == ["a/1/model.pkl", "b/7/outputs/sub/vocab.txt", "b/7/outputs/weights.bin"]


def test_model_digest_follows_contents_not_argument_order(tmp_path):
    a, b = tmp_path / "a.pkl", tmp_path / "b.pkl"
    a.write_bytes(b"aaa")
    b.write_bytes(b"bbb")
    one = [ModelRef("a", "1", a), ModelRef("b", "1", b)]
    first = builder.model_digest(one)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", first)
    assert builder.model_digest(list(reversed(one))) == first
    b.write_bytes(b"bbc")
    assert builder.model_digest(one) != first
    assert builder.model_digest([ModelRef("a", "2", a), ModelRef("b", "1", b)]) != builder.model_digest(one)


# ---------------------------------------------------------------- requirements and conda

def test_the_image_gets_werkzeug_for_rawhttp_scripts_even_from_an_older_install(monkeypatch):
    """AMLRequest/AMLResponse are werkzeug's wrappers: the image's requirements must hold werkzeug,
    also when the installed metadata predates it (an editable checkout installed earlier)."""
    import importlib.metadata

    names = [builder._project_name(r) for r in builder.runtime_requirements()]
    assert "werkzeug" in names and "uvicorn" in names and len(names) == len(set(names))
    monkeypatch.setattr(importlib.metadata, "requires", lambda _name: [
        "uvicorn[standard]>=0.29; extra == 'runtime'", "numpy; extra == 'runtime'", "PyYAML>=6"])
    reqs = builder.runtime_requirements()
    assert reqs[:2] == ["uvicorn[standard]>=0.29", "numpy"] and "werkzeug>=3.0" in reqs and "PyYAML>=6" not in reqs


def test_requirement_includes_are_inlined_and_index_options_split(tmp_path):
    (tmp_path / "base.txt").write_text("numpy>=1.26  # pinned below\n")
    req = tmp_path / "requirements.txt"
    req.write_text("--extra-index-url https://example.invalid/simple\n-r base.txt\nscikit-learn==1.9.1\n\n# c\n")
    lines, options = builder.read_requirement_lines(req, "--requirements")
    assert lines == ["numpy>=1.26", "scikit-learn==1.9.1"]
    assert options == ["--extra-index-url https://example.invalid/simple"]


@pytest.mark.parametrize("line", ["-e .", "./mypkg", "git+https://example.invalid/x.git", "pkg @ https://example.invalid/p.tar.gz"])
def test_requirements_that_need_a_build_or_network_are_refused(tmp_path, line):
    req = tmp_path / "requirements.txt"
    req.write_text(f"numpy\n{line}\n")
    with pytest.raises(ConfigError) as info:
        builder.read_requirement_lines(req, "--requirements")
    assert f"requirements.txt:2: '{line}' cannot be installed offline" in info.value.message
    assert "--source-dir" in info.value.message


def test_conda_pip_section_and_python_pin_are_honoured(tmp_path):
    env = tmp_path / "env.yml"
    env.write_text(
        "name: scoring\nchannels: [conda-forge]\ndependencies:\n  - python=3.11\n  - pip\n"
        "  - pip:\n      - scikit-learn==1.9.1\n      - inference-schema\n"
    )
    parsed = conda.parse(env)
    assert parsed.pip == ["scikit-learn==1.9.1", "inference-schema"]
    assert parsed.python == "=3.11"
    assert conda.python_matches(parsed.python, "3.11.2")
    assert not conda.python_matches("3.8", "3.11.2")
    assert conda.python_matches(">=3.9,<3.12", "3.11.2")


def test_conda_only_packages_are_an_error_with_the_pip_line_to_use(tmp_path):
    env = tmp_path / "env.yml"
    env.write_text("dependencies:\n  - python=3.11\n  - numpy=1.26\n  - conda-forge::lightgbm\n  - pip:\n    - pandas\n")
    with pytest.raises(ConfigError) as info:
        conda.parse(env)
    message = info.value.message
    assert message.startswith(f"--conda {env}: conda packages cannot be installed")
    assert "'numpy=1.26' -> 'numpy==1.26.*'" in message
    assert "'conda-forge::lightgbm' -> 'lightgbm'" in message


def test_conda_python_mismatch_fails_the_build_plan(tmp_path):
    env = tmp_path / "env.yml"
    env.write_text("dependencies:\n  - python=3.8\n  - pip:\n    - numpy\n")
    spec = _spec(tmp_path, conda=env)
    with pytest.raises(ConfigError, match=r"asks for python =3.8 but the base image .* has Python 3.11.2"):
        builder.write_context(spec, tmp_path / "ctx", builder.default_base_info(), lambda m: None)


def test_wheel_platforms_follow_the_image_glibc():
    tags = wheelhouse.TargetPython(version="3.11", glibc="2.36", machine="x86_64").platforms()
    assert tags[0] == "manylinux_2_36_x86_64"
    assert "manylinux_2_17_x86_64" in tags and "manylinux2014_x86_64" in tags and "manylinux1_x86_64" in tags
    assert "manylinux_2_37_x86_64" not in tags
    assert "manylinux_2_28_x86_64" not in wheelhouse.TargetPython(glibc="2.17").platforms()


# ---------------------------------------------------------------- Dockerfile

def _dockerfile(models=None) -> str:
    models = models or [ModelRef("churn", "3", Path("m.pkl"))]
    spec = PackageSpec(models=models, image="churn:3", entry_script=Path("score.py"), source="mlflow", registry="http://mlflow:5000")
    labels = builder.image_labels(spec, "sha256:" + "0" * 64, "score.py")
    return builder.render_dockerfile("pipeline-plugin/base:bookworm", "score.py", builder.model_dir_env(models), labels)


def test_dockerfile_orders_dependencies_before_code_before_models():
    text = _dockerfile()
    order = [
        text.index("COPY wheels/"),
        text.index("pip install --no-index"),
        text.index("COPY --from=deps /opt/venv"),
        text.index("COPY runtime/"),
        text.index("COPY app/"),
        text.index("COPY models/"),
        text.index("LABEL"),
    ]
    assert order == sorted(order)
    # nothing model-specific before the dependency layers
    assert "churn" not in text[: text.index("COPY models/")]


def test_dockerfile_runs_as_non_root_with_healthcheck_port_and_stop_signal():
    text = _dockerfile()
    assert "useradd --uid 10001" in text
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert re.search(r"^EXPOSE 5001$", text, re.M)
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD \[.*/readyz", text, re.M)
    assert 'CMD ["python", "-m", "pipeline_plugin.runtime"]' in text
    assert 'AZUREML_MODEL_DIR="/var/azureml-app/azureml-models/churn/3"' in text


def test_dockerfile_labels_carry_model_source_registry_digest_and_plugin_version():
    text = _dockerfile()
    for key, value in {
        "io.pipeline-plugin.model.name": "churn",
        "io.pipeline-plugin.model.version": "3",
        "io.pipeline-plugin.model.source": "mlflow",
        "io.pipeline-plugin.model.registry": "http://mlflow:5000",
        "io.pipeline-plugin.model.digest": "sha256:" + "0" * 64,
        "org.opencontainers.image.title": "churn",
    }.items():
        assert f"{key}={json.dumps(value)}" in text
    assert "io.pipeline-plugin.plugin-version=" in text


def test_label_values_cannot_break_out_of_the_dockerfile():
    spec = PackageSpec(models=[ModelRef("m", "1", Path("x"))], image="m:1", registry='x"\nRUN rm -rf /')
    labels = builder.image_labels(spec, "sha256:0", "score.py")
    text = builder.render_dockerfile("b:1", "score.py", "/d", labels)
    assert "\nRUN rm -rf /" not in text
    assert 'io.pipeline-plugin.model.registry="x\\" RUN rm -rf /"' in text


# ---------------------------------------------------------------- no-code detection

def test_no_code_refuses_a_plain_pickle_with_the_fix(tmp_path):
    model = tmp_path / "model.pkl"
    model.write_bytes(b"x")
    with pytest.raises(ConfigError, match="neither an MLflow model folder .* nor a single .onnx file; pass --entry-script"):
        builder.no_code_plan(ModelRef("m", "1", model), builder.default_base_info(), lambda m: None)


def test_no_code_onnx_file_gets_the_onnx_scorer(tmp_path):
    model = tmp_path / "net.onnx"
    model.write_bytes(b"onnx")
    plan = builder.no_code_plan(ModelRef("net", "1", model), builder.default_base_info(), lambda m: None)
    assert plan.kind == "onnx" and plan.settings == {"model_file": "net.onnx"}
    assert "onnxruntime" in plan.requirements


def test_no_code_mlflow_folder_drops_mlflow_from_requirements(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n    python_version: 3.11.7\n"
        "  sklearn:\n    pickled_model: model.pkl\n    serialization_format: cloudpickle\n"
        "signature:\n  inputs: '[{\"type\": \"double\", \"name\": \"tenure\"}, {\"type\": \"double\", \"name\": \"calls\"}]'\n"
    )
    (folder / "model.pkl").write_bytes(b"x")
    (folder / "requirements.txt").write_text("mlflow==3.17.2\nmlflow-skinny==3.17.2\ncloudpickle==3.1.3\nscikit-learn==1.9.1\n")
    plan = builder.no_code_plan(ModelRef("churn", "1", folder), builder.default_base_info(), lambda m: None)
    assert plan.kind == "mlflow-sklearn"
    assert plan.requirements == ["cloudpickle==3.1.3", "scikit-learn==1.9.1"]
    assert plan.settings["model_folder"] == "model" and plan.settings["columns"] == ["tenure", "calls"]


def test_no_code_mlflow_without_sklearn_flavor_says_what_it_has(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors:\n  python_function: {}\n  pytorch: {}\n")
    with pytest.raises(ConfigError, match="sklearn flavor; this one has python_function, pytorch"):
        builder.no_code_plan(ModelRef("m", "1", folder), builder.default_base_info(), lambda m: None)


def test_example_files_are_consistent():
    sample = json.loads((EXAMPLE / "sample.json").read_text())
    expected = json.loads((EXAMPLE / "expected.json").read_text())
    assert len(sample["data"]) == len(expected["predictions"]) == len(expected["probabilities"])
    import sklearn

    assert (EXAMPLE / "requirements.txt").read_text().strip() == f"scikit-learn=={sklearn.__version__}"


def _tiny_wheel(folder: Path, name: str = "ppdemo", version: str = "1.0") -> Path:
    import zipfile

    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/__init__.py", "")
        z.writestr(f"{name}-{version}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(
            f"{name}-{version}.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr(f"{name}-{version}.dist-info/RECORD", "")
    return path


def test_wheelhouse_resolves_from_the_host_cache_and_remembers_the_resolution(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    _tiny_wheel(cache)
    req = tmp_path / "requirements.txt"
    req.write_text("ppdemo==1.0\n")
    said: list[str] = []
    names = wheelhouse.prepare(req, tmp_path / "ctx1", cache=cache, progress=said.append)
    assert names == ["ppdemo-1.0-py3-none-any.whl"]
    assert (tmp_path / "ctx1" / names[0]).is_file()
    assert any("no network" in line for line in said)
    said.clear()
    assert wheelhouse.prepare(req, tmp_path / "ctx2", cache=cache, progress=said.append) == names
    assert any("same requirements as an earlier build" in line for line in said)
    assert oct((tmp_path / "ctx2" / names[0]).stat().st_mode & 0o777) == "0o644"


def test_validate_source_dir_needs_an_entry_script(tmp_path):
    with pytest.raises(ConfigError, match="--source-dir .* was given without --entry-script"):
        builder.validate(_spec(tmp_path, entry_script=None, source_dir=tmp_path))


@pytest.mark.parametrize(
    "conda_spec, pip",
    [
        ("numpy=1.26", "numpy==1.26.*"),
        ("numpy=1.26.4", "numpy==1.26.4"),
        ("numpy=1.26.4=py311h64a7726_0", "numpy==1.26.4"),
        ("numpy>=1.20", "numpy>=1.20"),
        ("conda-forge::numpy", "numpy"),
    ],
)
def test_conda_spec_to_pip_suggestion(conda_spec, pip):
    assert conda.pip_line(conda_spec) == pip


def test_validate_rejects_a_base_image_that_is_not_a_reference(tmp_path):
    with pytest.raises(ConfigError, match=r"--base-image 'x\nRUN id': not an image reference"):
        builder.validate(_spec(tmp_path, base_image="x\nRUN id"))
    builder.validate(_spec(tmp_path, base_image="localhost:5000/base:bookworm@sha256:" + "a" * 64))


def test_a_failed_generate_dockerfile_leaves_nothing_and_can_be_run_again(tmp_path, capsys):
    out = tmp_path / "gen"
    env = tmp_path / "environment.yml"
    env.write_text("name: x\ndependencies:\n  - python=3.8\n")
    spec = _spec(tmp_path, conda=env, generate_dockerfile=out, base_image="pipeline-plugin-tests/no-such-base:0")
    with pytest.raises(ConfigError, match="python"):
        builder.build(spec)
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".gen")] == []
    assert "warning: cannot inspect pipeline-plugin-tests/no-such-base:0" in capsys.readouterr().err
    env.write_text("name: x\ndependencies:\n  - python=3.11\n")
    result = builder.build(spec)
    assert (out / "Dockerfile").is_file() and result.dockerfile_dir == out
