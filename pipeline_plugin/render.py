"""Render a CI pipeline for one (rule, event) pair from the Jinja2 templates in ``templates/``.

Event values come from outside (a registry webhook). They reach a rendered pipeline only as data:
workflow inputs, pipeline parameters or variables, always YAML-escaped by the ``yaml`` filter, and
never inside ``${{ }}``, ``$( )``, ``$[ ]``, ``{{ }}`` or shell text. The pipelines' scripts read them
from environment variables. On top of that, every event value must match a strict pattern
(:data:`PATTERNS`); anything else is refused with a :class:`PayloadError` that names the field, the
value and the allowed pattern, so a hostile model name never gets near a CI system.

The same checks guard ``dispatch``: :func:`pipeline_inputs` is what the providers send.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound
from jinja2.exceptions import TemplateError
from jinja2.sandbox import SandboxedEnvironment

from . import __version__, settings
from .errors import ConfigError, PayloadError, suggest
from .events import ModelVersionEvent
from .fetch import names_a_file

#: render providers -> (template folder, template file, output path inside a repository)
TEMPLATES: dict[str, tuple[str, str, str]] = {
    "github": ("github", "deploy-model.yml.j2", ".github/workflows/deploy-model.yml"),
    "azure-pipelines": ("azure-pipelines", "deploy-model.yml.j2", "azure-pipelines/deploy-model.yml"),
    "gitlab": ("gitlab", "deploy-model.gitlab-ci.yml.j2", ".gitlab-ci.yml"),
}

#: the action's reference that rendered workflows, `init`, README and docs/ci.md use: the major
#: tag moves to each release of that major version; pin `@vX.Y.Z` or a commit SHA to freeze it
ACTION_REF = f"pipeline-plugin/pipeline-plugin@v{__version__.split('.')[0]}"

#: the variable every stage reads the shared store's URL from (`--database-url` otherwise)
DATABASE_URL_VARIABLE = "PIPELINE_PLUGIN_DATABASE_URL"

#: dispatch provider name -> render provider name
RENDER_NAME = {"github": "github", "azure-devops": "azure-pipelines", "gitlab": "gitlab"}
#: render accepts both names of Azure's CI (``--provider azure-devops`` is ``azure-pipelines`` here)
RENDER_ALIASES = {"azure-devops": "azure-pipelines"}

# ---- strict patterns for values that come from an event ----------------------------------------
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
PATTERNS: dict[str, str] = {
    "model": _NAME,
    "version": r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$",
    "source": r"^[a-z][a-z0-9-]{0,31}$",
    "kind": r"^[a-z_]+\.[a-z_]+$",
    "event_id": r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$",
    "alias": _NAME,
    "tag key": r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$",
    # tag values are data, but still may not carry anything a CI system would expand:
    # no $ { } ` \ < > quotes or control characters, at most 256 characters
    "tag value": r"^[^$`{}\\<>\"'\x00-\x1f\x7f]{0,256}$",
    "artifact uri": r"^[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9._~:/?#@!&*+,;=%-]{1,1024}$",
    # one key=value pair of the registry identity; ModelVersionEvent.registry_key() joins them with
    # `;` for `package --registry` (image labels promote's write-back reads), so no `;` in a value
    "registry": r"^[A-Za-z][A-Za-z0-9_.-]{0,63}=[A-Za-z0-9._~:/?#@!&*+,=%-]{0,1024}$",
}
_PATTERN_HELP = {
    "tag value": "at most 256 characters without $ { } ` \\ < > quotes or control characters",
}


def check_value(field: str, value: str, kind: str | None = None) -> str:
    """Return ``value`` if it matches the pattern for ``kind`` (default: ``field``), else raise a
    :class:`PayloadError` naming the field, the value and the allowed pattern."""
    kind = kind or field
    pattern = PATTERNS[kind]
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        shown = _PATTERN_HELP.get(kind, pattern)
        raise PayloadError(
            f"event field {field!r} has value {value!r}, which is not allowed in a CI pipeline: "
            f"it must match {shown}. Rename it in the registry (or drop the tag with the rule's "
            f"pipeline.forward_tags) and send the event again.",
            field=field,
            value=value,
            pattern=pattern,
        )
    return value


def event_id(event: ModelVersionEvent, rule_name: str) -> str:
    """The run id a pipeline carries back to the event: the same id ``serve``'s worker gives the run
    of this event and rule (``inbox.run_id_for``), so a run started by hand traces back alike."""
    from .inbox import event_id_for, run_id_for

    return run_id_for(event_id_for(event), rule_name)


def forwarded_tags(event: ModelVersionEvent, pipeline: Mapping[str, Any]) -> dict[str, str]:
    """The event tags a pipeline receives: all of them, or only ``pipeline.forward_tags``."""
    wanted = pipeline.get("forward_tags")
    if wanted is not None and not isinstance(wanted, list):
        raise ConfigError(f"pipeline.forward_tags must be a list of tag names, got {wanted!r}")
    tags = {k: v for k, v in sorted(event.tags.items()) if wanted is None or k in wanted}
    for key, value in tags.items():
        check_value(f"tags.{key}", key, "tag key")
        check_value(f"tags.{key}", value, "tag value")
    return tags


#: the variable name of each of :func:`pipeline_inputs` where a CI system takes variables rather
#: than named inputs (GitLab pipeline variables, Azure DevOps release variables)
INPUT_VARIABLES = {
    "model": "MODEL_NAME",
    "version": "MODEL_VERSION",
    "source": "MODEL_SOURCE",
    "kind": "MODEL_EVENT_KIND",
    "event-id": "EVENT_ID",
    "tags": "MODEL_TAGS",
    "artifact-uri": "ARTIFACT_URI",
    "registry": "MODEL_REGISTRY",
    # not MLFLOW_TRACKING_URI itself: a pipeline variable would hide the CI/CD variable of that name
    "tracking-uri": "MODEL_TRACKING_URI",
}


def pipeline_inputs(event: ModelVersionEvent, pipeline: Mapping[str, Any], run_id: str) -> dict[str, str]:
    """The checked values a pipeline receives for one event: what ``render`` writes as defaults
    and what ``dispatch`` sends as inputs / variables / parameters (all strings).

    An ``artifact_uri`` that names a file (a path, ``file:``) is not handed on: on a CI runner it
    would be read from the runner's own disk (its credentials, its other jobs' files), which no
    sender may choose, and the registry's host is not the runner anyway. The pipeline then fetches
    the version through its registry (``models:/NAME/VERSION``)."""
    values = {
        "model": check_value("model", event.model),
        "version": check_value("version", event.version),
        "source": check_value("source", event.source),
        "kind": check_value("kind", event.kind),
        "event-id": check_value("event_id", run_id),
        "tags": json.dumps(forwarded_tags(event, pipeline), sort_keys=True, separators=(",", ":")),
        "artifact-uri": "",
        # the registry identity travels to `package --source --registry` (image labels), so that
        # promote in CI writes back to the registry the version came from
        "registry": "",
        # MLflow's tracking URI when the event names it; the pipelines use it as MLFLOW_TRACKING_URI
        # (else the MLFLOW_TRACKING_URI the CI system's variables give)
        "tracking-uri": "",
    }
    if event.artifact_uri and not names_a_file(event.artifact_uri):
        values["artifact-uri"] = check_value("artifact_uri", event.artifact_uri, "artifact uri")
    for key, value in sorted(event.registry.items()):
        check_value(f"registry.{key}", f"{key}={value}", "registry")
    values["registry"] = event.registry_key()
    tracking_uri = dict(event.registry).get("tracking_uri")
    if tracking_uri:
        values["tracking-uri"] = check_value("registry.tracking_uri", tracking_uri, "artifact uri")
    return values


# ---- settings a rule may give a rendered pipeline ------------------------------------------------
@dataclass(frozen=True)
class _Setting:
    default: Any
    pattern: str | None = None  # for strings rendered into YAML as data
    kind: type = str


_PATH = r"^[A-Za-z0-9._/-][A-Za-z0-9._/ -]{0,254}$"
SETTINGS: dict[str, _Setting] = {
    "service": _Setting("", _NAME),
    "approval": _Setting(False, kind=bool),  # same default as the local provider: no gate unless asked
    "entry_script": _Setting("score.py", _PATH),
    "source_dir": _Setting("", _PATH),
    "requirements": _Setting("", _PATH),
    "conda": _Setting("", _PATH),
    "sample": _Setting("sample.json", _PATH),
    "expect": _Setting("", _PATH),
    "tolerance": _Setting("", r"^[0-9.eE+-]{1,32}$"),
    "image_repository": _Setting("localhost:5000/models", r"^[a-z0-9][a-z0-9._:/-]{0,254}$"),
    "base_image": _Setting("", r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,254}$"),
    "push": _Setting(False, kind=bool),  # push the image to image_repository (its registry digest then moves on)
    "target": _Setting("docker", r"^(docker|process|kubernetes)$"),
    "staging_port": _Setting(8890, kind=int),
    "production_port": _Setting(8891, kind=int),
    "config": _Setting("", _PATH),
    "strategy": _Setting("blue-green", r"^(blue-green|canary)$"),
    # runner labels, comma-separated; default: see runner_defaults()
    "runs_on": _Setting("", r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(,[ ]?[A-Za-z0-9][A-Za-z0-9._-]{0,63}){0,15}$"),
    "action": _Setting(ACTION_REF, r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}@[A-Za-z0-9._/-]{1,100}$"),
    # the GitHub secret / Azure secret variable holding PIPELINE_PLUGIN_DATABASE_URL (GitLab: a masked
    # CI/CD variable of that name); a name, rendered into ${{ secrets.NAME }} / $(NAME)
    "database_secret": _Setting(DATABASE_URL_VARIABLE, r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"),
    # "": the version that renders the pipeline (default_install); a rule's `install:` must be pinned
    "install": _Setting("", r"^[A-Za-z0-9./][A-Za-z0-9._=<>!~\[\],@:/+%-]{0,254}$"),
    "python": _Setting("3.12", r"^3\.[0-9]{1,2}$"),
    "event_type": _Setting("pipeline-plugin.deploy", r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"),
    "vm_image": _Setting("", r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"),  # a Microsoft-hosted agent image
    "pool": _Setting("", r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,63}$"),  # a self-hosted agent pool's name
    "image": _Setting("python:3.12-slim", r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,254}$"),
    "runner_tags": _Setting("", r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,63}(,[ ]?[A-Za-z0-9][A-Za-z0-9._ -]{0,63}){0,15}$"),
}


def template_settings(pipeline: Mapping[str, Any], rule_name: str = "rule") -> dict[str, Any]:
    """Rule ``pipeline`` settings the templates use, checked and with defaults filled in."""
    out: dict[str, Any] = {}
    for key, spec in SETTINGS.items():
        value = pipeline.get(key, spec.default)
        if value is None:
            value = spec.default
        where = f"rule {rule_name!r}: pipeline.{key}"
        if spec.kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{where} must be true or false, got {value!r}")
        elif spec.kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
                raise ConfigError(f"{where} must be a port number (1-65535), got {value!r}")
        else:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or (value and spec.pattern and not re.fullmatch(spec.pattern, value)):
                raise ConfigError(f"{where} is {value!r}; it must match {spec.pattern}")
        out[key] = value
    return out


def runner_defaults(opts: Mapping[str, Any]) -> dict[str, Any]:
    """Where the jobs run, consistent with the target unless the rule says otherwise.

    The docker and process targets serve on the machine that ran `deploy`, and smoke-test and
    promote must reach that machine: the jobs run on one self-hosted machine (GitHub label
    ``self-hosted``, Azure's self-hosted agent pool ``Default``; GitLab: the rule's
    ``runner_tags``). The kubernetes target serves in a cluster, so hosted runners
    (``ubuntu-latest``) work.
    """
    hosted = opts["target"] == "kubernetes"
    labels = [l.strip() for l in (opts["runs_on"] or ("ubuntu-latest" if hosted else "self-hosted")).split(",")]
    out: dict[str, Any] = {"runs_on": labels[0] if len(labels) == 1 else labels}
    # Azure: pool.name (self-hosted) or pool.vmImage (Microsoft-hosted); a rule's vm_image wins
    if opts["vm_image"] or (hosted and not opts["pool"]):
        out["pool_key"], out["pool_value"] = "vmImage", opts["vm_image"] or "ubuntu-latest"
    else:
        out["pool_key"], out["pool_value"] = "name", opts["pool"] or "Default"
    return out


# ---- the install line of the rendered jobs -------------------------------------------------------
#: the extras a job needs, by the event's source (its registry client: fetch and write-back) and by
#: the deploy target; ``postgres`` always (PIPELINE_PLUGIN_DATABASE_URL may name a PostgreSQL store)
SOURCE_EXTRAS = {"mlflow": "mlflow", "databricks": "mlflow", "sagemaker": "sagemaker", "huggingface": "huggingface",
                 "wandb": "wandb"}
TARGET_EXTRAS = {"kubernetes": "kubernetes"}
_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?===?[0-9][A-Za-z0-9.+!-]*$")
_DIRECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?@(.+)$")
_GIT_PINNED = re.compile(r"^git\+(https|ssh|file)://[^@\s]+(\.git)?@[A-Za-z0-9._/-]+(#.*)?$|^git\+ssh://git@[^@\s]+@[A-Za-z0-9._/-]+(#.*)?$")


def default_install(target: str, source: str) -> str:
    """The exact version that renders the pipeline, with the extras its jobs need:
    ``pipeline-plugin[mlflow,postgres]==0.1.0`` for an MLflow event on the docker target."""
    extras = {"postgres", SOURCE_EXTRAS.get(source, ""), TARGET_EXTRAS.get(target, "")} - {""}
    return f"pipeline-plugin[{','.join(sorted(extras))}]=={__version__}"


def install_problem(spec: str) -> str | None:
    """Why ``spec`` (what the jobs pass to pip install) is not pinned to one build, or None. Pinned:
    ``NAME[extras]==VERSION``, a wheel or sdist URL or path, ``NAME @ URL``, a git URL with ``@REF``."""
    text = spec.strip()
    direct = _DIRECT.match(text)
    if direct:
        text = direct.group(2)
    if _PINNED.match(text) and not direct:
        return None
    if text.startswith("git+"):
        return None if _GIT_PINNED.match(text) else "a git URL must name the commit or tag: git+https://HOST/REPO.git@v0.1.0"
    if text.split("#", 1)[0].endswith((".whl", ".tar.gz", ".zip")) or text.startswith(("file://", "./", "/")):
        return None
    return ("it names no exact version: a bare or ranged name installs whatever the package index holds under "
            "that name (pipeline-plugin is not published on PyPI, so anyone could register it)")


def install_spec(pipeline: Mapping[str, Any], target: str, source: str, rule_name: str = "rule") -> str:
    """The rule's ``install:`` (checked: pinned to one build) or :func:`default_install`."""
    spec = pipeline.get("install")
    if spec in (None, ""):
        return default_install(target, source)
    problem = install_problem(str(spec))
    if problem:
        raise ConfigError(
            f"rule {rule_name!r}: pipeline.install is {spec!r}; {problem}. Give the exact build the jobs install, "
            f"e.g. {default_install(target, source)!r}, a wheel URL, or git+https://HOST/REPO.git@TAG"
        )
    return str(spec)


# ---- rendering -----------------------------------------------------------------------------------
def _yaml_scalar(value: Any) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML; non-ASCII is \\u-escaped); a list
    becomes a flow sequence of such scalars."""
    if isinstance(value, (list, tuple)):
        return json.dumps([str(v) for v in value], ensure_ascii=True)
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=True)


def _environment(folder: Path) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=FileSystemLoader(str(folder)),
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        # the pipelines use ${{ }} and $[ ] themselves: Jinja uses <{ }> / <% %> so that the two
        # never mix and a `{{` in a template is always the CI system's, never ours
        variable_start_string="<{",
        variable_end_string="}>",
        block_start_string="<%",
        block_end_string="%>",
        comment_start_string="<#",
        comment_end_string="#>",
    )
    env.filters["yaml"] = _yaml_scalar
    return env


def templates_dir() -> Path:
    return settings.data_dir("templates")


@dataclass
class Rendered:
    provider: str
    path: str  # where the file belongs inside a repository
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "path": self.path}


def render_pipeline(
    provider: str,
    event: ModelVersionEvent,
    rule_name: str,
    pipeline: Mapping[str, Any],
    run_id: str | None = None,
    template_dir: Path | None = None,
) -> Rendered:
    """Render the pipeline file for ``provider`` (``github``, ``azure-pipelines``, ``gitlab``)."""
    provider = RENDER_ALIASES.get(provider, provider)
    if provider not in TEMPLATES:
        raise ConfigError(f"no pipeline template for provider {provider!r}.{suggest(provider, TEMPLATES)}")
    folder_name, file_name, out_path = TEMPLATES[provider]
    run_id = run_id or event_id(event, rule_name)
    inputs = pipeline_inputs(event, pipeline, run_id)
    opts = template_settings(pipeline, rule_name)
    opts["install"] = install_spec(pipeline, opts["target"], event.source, rule_name)
    opts.update(runner_defaults(opts))
    if not opts["service"]:
        opts["service"] = inputs["model"].lower()
    context = {
        "inputs": inputs,
        "opts": opts,
        "rule": rule_name,
        "plugin_version": __version__,
    }
    folder = (template_dir or templates_dir()) / folder_name
    try:
        text = _environment(folder).get_template(file_name).render(**context)
    except TemplateNotFound:
        raise ConfigError(f"template {folder / file_name} is missing; reinstall pipeline-plugin") from None
    except TemplateError as exc:
        raise ConfigError(f"template {folder / file_name} failed to render: {exc}") from None
    return Rendered(provider=provider, path=out_path, text=text)
