"""Package directories (the layout `package --generate-dockerfile` writes) served by the process
target with the installed runtime: a model version whose predictions are row sums times its
version number, optionally failing once a marker file exists."""

from __future__ import annotations

from pathlib import Path

DOCKERFILE = """\
FROM pipeline-plugin/base:bookworm
COPY app/ /var/azureml-app/
COPY models/ /var/azureml-app/azureml-models/
ENV PORT=5001 \\
    AZUREML_SOURCE_DIRECTORY=/var/azureml-app \\
    AZUREML_ENTRY_SCRIPT=score.py \\
    AZUREML_MODEL_DIR=/var/azureml-app/azureml-models/{model}/{version}
LABEL io.pipeline-plugin.model.name="{model}" \\
      io.pipeline-plugin.model.version="{version}"{extra_labels}
USER 10001:10001
CMD ["python", "-m", "pipeline_plugin.runtime"]
"""

SCORE = """\
import json
import os

def init():
    global factor
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "factor.txt")) as fh:
        factor = float(fh.read())

def run(raw):
    if {marker!r} and os.path.exists({marker!r}):
        raise RuntimeError("a dependency this version needs is missing")
    return [float(sum(row)) * factor for row in json.loads(raw)["data"]]
"""

SAMPLE = [[1.0, 2.0], [3.0, 4.5]]


def expected(version: int) -> list[float]:
    return [sum(row) * version for row in SAMPLE]


def package_dir(root: Path, version: int, model: str = "sums", fail_marker: Path | None = None,
                labels: dict[str, str] | None = None) -> Path:
    d = root / f"pkg-{model}-{version}{'-fragile' if fail_marker else ''}"
    (d / "app").mkdir(parents=True)
    models = d / "models" / model / str(version)
    models.mkdir(parents=True)
    extra = "".join(f' \\\n      {k}="{v}"' for k, v in (labels or {}).items())
    (d / "Dockerfile").write_text(DOCKERFILE.format(model=model, version=version, extra_labels=extra))
    (d / "app" / "score.py").write_text(SCORE.format(marker=str(fail_marker or "")))
    (models / "factor.txt").write_text(str(version))
    return d
