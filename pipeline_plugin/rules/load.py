"""Loading trigger rule files: YAML with line numbers, validation, every error at once.

:func:`check_rules` returns the rules and a list of :class:`RuleError` (file, line, field, message,
suggestion); :func:`load_rules` raises one ``ConfigError`` listing them all.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Callable

import yaml

from ..errors import ConfigError
from ..events import KINDS, SOURCES
from .match import Match, Rule, check_glob, parse_version_spec

# ---- YAML that remembers lines --------------------------------------------------------------


class _Map(dict):
    """A mapping from YAML with ``line`` (1-based), ``key_lines``, ``value_lines`` and the
    ``duplicates`` YAML would otherwise silently overwrite."""

    line = 0

    def __init__(self) -> None:
        super().__init__()
        self.key_lines: dict[Any, int] = {}
        self.value_lines: dict[Any, int] = {}
        self.texts: dict[Any, str] = {}  # scalar values as written (before YAML typed them)
        self.duplicates: list[tuple[Any, int, int]] = []  # (key, line, first line)


class _Seq(list):
    line = 0

    def __init__(self) -> None:
        super().__init__()
        self.item_lines: list[int] = []


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    own = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
    loader.flatten_mapping(node)  # `<<: *anchor` merges come first; later keys override them
    result = _Map()
    result.line = node.start_mark.line + 1
    written_here: set[Any] = set()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            key = str(key)
        line = key_node.start_mark.line + 1
        if key in written_here and id(key_node) in own:
            result.duplicates.append((key, line, result.key_lines[key]))
            continue
        if id(key_node) in own:
            written_here.add(key)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
        result.value_lines[key] = value_node.start_mark.line + 1
        if isinstance(value_node, yaml.ScalarNode):
            result.texts[key] = value_node.value
    return result


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _Seq:
    result = _Seq()
    result.line = node.start_mark.line + 1
    for item in node.value:
        result.append(loader.construct_object(item, deep=True))
        result.item_lines.append(item.start_mark.line + 1)
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


def _plain(value: Any) -> Any:
    """Strip the line bookkeeping: plain dicts and lists for ``Rule.pipeline`` / JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ---- errors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleError:
    """One problem in one rule file: ``triggers/churn.yml:4: unknown key 'modle' in match; did you
    mean 'model'?``"""

    file: str
    line: int
    field: str | None
    message: str
    suggestion: str | None = None

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}: {self.message}"
        return f"{text}; {self.suggestion}" if self.suggestion else text

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "field": self.field,
            "message": self.message,
            "suggestion": self.suggestion,
            "text": str(self),
        }


def did_you_mean(value: Any, choices: Any, what: str = "valid") -> str:
    """``did you mean 'model'?`` for a close choice, else the list of valid ones."""
    ordered = sorted(choices)
    close = difflib.get_close_matches(str(value), ordered, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"{what}: " + ", ".join(ordered)


def _hint(exc: ValueError) -> str | None:
    return exc.args[1] if len(exc.args) > 1 else None


class _Collector:
    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[RuleError] = []

    def add(self, line: int, field: str | None, message: str, suggestion: str | None = None) -> None:
        self.errors.append(RuleError(self.file, line, field, message, suggestion))


# ---- schema ---------------------------------------------------------------------------------

RULE_KEYS = ("name", "description", "enabled", "match", "pipeline")
MATCH_KEYS = ("source", "kind", "model", "version", "tags", "alias", "approval_status", "registry", "exclude")
#: registry identity keys the sources set (events.ModelVersionEvent.registry)
REGISTRY_KEYS = (
    "tracking_uri",  # mlflow
    "workspace", "subscription", "resource_group",  # azureml
    "model_package_group", "account", "region",  # sagemaker
    "repository", "host",  # huggingface, docker-registry, databricks (host)
    "entity", "project",  # wandb
)
PROVIDERS = ("local", "github", "gitlab", "azure-devops")
PROVIDER_ALIASES = {"azure-pipelines": "azure-devops"}  # as providers.ALIASES
RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
SERVICE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
GITHUB_REPOSITORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+$")  # as providers.github

# A validator takes (value, rule file's folder) and returns an error message or None. Messages
# name the expectation; the collector adds file, line and field.
Validator = Callable[[Any, Path], "str | tuple[str, str] | None"]


def _string(value: Any, _d: Path) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return f"must be a non-empty string, got {value!r}"
    return None


def _no_space(value: Any, d: Path) -> str | None:
    problem = _string(value, d)
    if problem is None and re.search(r"\s", value):
        return f"must not contain whitespace, got {value!r}"
    return problem


def _boolean(value: Any, _d: Path) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


def _port(value: Any, _d: Path) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        return f"must be a port number 1-65535, got {value!r}"
    return None


def _positive_int(value: Any, _d: Path) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return f"must be a positive integer (the id in the pipeline's URL), got {value!r}"
    return None


def _tolerance(value: Any, _d: Path) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return f"must be a number >= 0 (allowed absolute difference from `expect`), got {value!r}"
    return None


def _choice(*choices: str) -> Validator:
    def check(value: Any, _d: Path) -> Any:
        if value not in choices:
            return f"must be one of {', '.join(choices)}, got {value!r}", did_you_mean(value, choices, "valid")
        return None

    return check


def _target(value: Any, d: Path) -> Any:
    from ..targets import BACKENDS

    return _choice(*BACKENDS)(value, d)


def _strategy(value: Any, d: Path) -> Any:
    from ..stages.promote import STRATEGIES

    return _choice(*STRATEGIES)(value, d)


def _service(value: Any, _d: Path) -> Any:
    if not isinstance(value, str) or not SERVICE_NAME.match(value):
        fixed = re.sub(r"[^a-z0-9-]+", "-", str(value).lower()).strip("-")[:63] or "my-service"
        return (
            f"service name {value!r} is not valid: use lower-case letters, digits and '-' (at most 63)",
            f"e.g. {fixed!r}",
        )
    return None


def _path(kind: str) -> Validator:
    """A file or folder that must exist; relative paths resolve against the rule file's folder."""

    def check(value: Any, folder: Path) -> Any:
        problem = _string(value, folder)
        if problem:
            return problem + " (a path relative to the rule file)"
        path = Path(os.path.expanduser(value))
        resolved = Path(os.path.normpath(path if path.is_absolute() else folder / path))
        if kind == "file" and resolved.is_file() or kind == "dir" and resolved.is_dir():
            return None
        if resolved.exists():
            return f"{value!r} is not a {'file' if kind == 'file' else 'folder'} (resolved to {resolved})"
        siblings = sorted(p.name for p in resolved.parent.iterdir()) if resolved.parent.is_dir() else []
        close = difflib.get_close_matches(resolved.name, siblings, n=1, cutoff=0.6)
        hint = (
            f"did you mean {str(Path(value).parent / close[0])!r}?"
            if close
            else "relative paths resolve against the rule file's folder"
        )
        return f"{kind} {value!r} does not exist (resolved to {resolved})", hint

    return check


def _folders(value: Any, folder: Path) -> Any:
    """A list of existing folders (relative to the rule file): ``allowed_roots``."""
    if not isinstance(value, list) or not value:
        return (f"must be a list of folders, got {value!r}",
                "e.g. allowed_roots: [/srv/models]; local model paths from events are read only below these")
    for one in value:
        problem = _path("dir")(one, folder)
        if problem:
            return problem
    return None


def _scalars(value: Any, _d: Path) -> str | None:
    if not isinstance(value, dict):
        return f"must be a mapping of names to values, got {value!r}"
    for k, v in value.items():
        if not isinstance(k, str) or not ENV_NAME.match(k):
            return f"name {k!r} must be letters, digits and '_' (not starting with a digit)"
        if isinstance(v, (dict, list)) or v is None:
            return f"value of {k!r} must be a string, number or boolean, got {v!r}"
    return None


def _github_repository(value: Any, _d: Path) -> Any:
    if not isinstance(value, str) or not GITHUB_REPOSITORY.match(value):
        return f"must be 'owner/name', got {value!r}", "e.g. 'acme/churn-model'"
    return None


def _github_workflow(value: Any, _d: Path) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return None
    if isinstance(value, str) and (value.endswith((".yml", ".yaml")) or value.isdigit()) and "/" not in value:
        return None
    return (
        f"must be a workflow file name in .github/workflows or a workflow id, got {value!r}",
        "e.g. 'deploy-model.yml'",
    )


def _gitlab_project(value: Any, _d: Path) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return None
    if isinstance(value, str) and re.fullmatch(r"[0-9]+|[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)+", value):
        return None
    return f"must be a project path 'group/name' or a numeric project id, got {value!r}", "e.g. 'acme/churn-model'"


def _env_name(value: Any, _d: Path) -> Any:
    if not isinstance(value, str) or not ENV_NAME.match(value):
        return (
            f"must name an environment variable that holds the token, got {value!r}",
            "never put a token in a rule file; e.g. 'GITLAB_TRIGGER_TOKEN'",
        )
    return None


def _ref(value: Any, _d: Path) -> Any:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9._/-]+", value):
        return f"must be a branch or tag name, got {value!r}", "e.g. ref: main"
    return None


def _artifact_version(value: Any, _d: Path) -> Any:
    if not isinstance(value, str) or not (value == "model-version" or re.fullmatch(r"tag:\S+", value)):
        return (f"must be 'model-version' or 'tag:KEY', got {value!r}",
                "'model-version' when the artifact's versions are the model's, 'tag:KEY' when the model version's "
                "tag KEY holds the artifact version id (e.g. 'tag:build_id')")
    return None


def _all_of(*checks: Validator) -> Validator:
    def check(value: Any, folder: Path) -> Any:
        for one in checks:
            problem = one(value, folder)
            if problem:
                return problem
        return None

    return check


def _rendered(key: str) -> Validator:
    """What the CI templates accept for ``key`` (``render.SETTINGS``): the rendered pipeline
    passes it on as data, so it must match a strict pattern."""

    def check(value: Any, _d: Path) -> Any:
        from ..render import SETTINGS

        spec = SETTINGS[key]
        if spec.kind is not str or spec.pattern is None:
            return None
        text = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not re.fullmatch(spec.pattern, text):
            return f"{value!r} cannot go into a rendered CI pipeline: it must match {spec.pattern}"
        return None

    return check


def _install(value: Any, _d: Path) -> Any:
    from ..render import install_problem

    if isinstance(value, str) and install_problem(value):
        return (f"{value!r}: {install_problem(value)}",
                "pin the build the jobs install: install: 'pipeline-plugin[mlflow,postgres]==VERSION', a wheel URL, "
                "or git+https://HOST/REPO.git@TAG (default: the version that renders the pipeline)")
    return None


def _forward_tags(value: Any, _d: Path) -> Any:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        return f"must be a list of tag names, got {value!r}", "e.g. forward_tags: [stage_hint, git_sha]"
    return None


_COMMON: dict[str, Validator] = {"provider": _string, "service": _service, "approval": _boolean}

#: the stages' settings. ``local`` runs the stages here (paths are files beside the rule, and must
#: exist); a rendered CI pipeline runs them in the CI repository (paths inside that repository)
_STAGE_SETTINGS: dict[str, Validator] = {
    "tolerance": _tolerance,
    "base_image": _no_space,
    "image_repository": _no_space,
    "target": _target,
    "staging_port": _port,
    "production_port": _port,
    "strategy": _strategy,
}
_STAGE_PATHS = {
    "entry_script": "file", "source_dir": "dir", "requirements": "file", "conda": "file", "sample": "file",
    "expect": "file", "config": "file",
}


def _ci(extra: dict[str, Validator], render_keys: tuple[str, ...]) -> dict[str, Validator]:
    keys: dict[str, Validator] = {k: _all_of(v, _rendered(k)) for k, v in _STAGE_SETTINGS.items()}
    keys.update({k: _all_of(_string, _rendered(k)) for k in _STAGE_PATHS})
    keys["forward_tags"] = _forward_tags
    keys["push"] = _boolean
    for key in ("install", "python", *render_keys):
        keys[key] = _all_of(_string, _rendered(key))
    keys["install"] = _all_of(keys["install"], _install)
    keys.update(extra)
    return keys


#: the keys each provider accepts in a rule's ``pipeline:`` section (besides the common ones)
PIPELINE_KEYS: dict[str, dict[str, Validator]] = {
    "local": {**_STAGE_SETTINGS, **{k: _path(kind) for k, kind in _STAGE_PATHS.items()}, "allowed_roots": _folders},
    "github": _ci(
        {
            "repository": _github_repository,
            "workflow": _github_workflow,
            "ref": _ref,
            "mode": _choice("workflow_dispatch", "repository_dispatch"),
            "event_type": _all_of(_string, _rendered("event_type")),
            "inputs": _scalars,
            "return_run_details": _boolean,
        },
        ("runs_on", "action", "database_secret"),
    ),
    "gitlab": _ci(
        {
            "project": _gitlab_project,
            "ref": _ref,
            "trigger_token_env": _env_name,
            "variables": _scalars,
        },
        ("image", "runner_tags"),
    ),
    "azure-devops": _ci(
        {
            "project": _string,
            "pipeline_id": _positive_int,
            "release_definition_id": _positive_int,
            "artifact_alias": _string,
            "artifact_version": _artifact_version,
            "ref": _ref,
            "parameters": _scalars,
        },
        ("vm_image", "pool", "database_secret"),
    ),
}


def _required(provider: str, section: dict) -> list[tuple[str, str]]:
    """(key, why) pairs that ``section`` lacks."""
    missing = []
    if provider == "github":
        if "repository" not in section:
            missing.append(("repository", "the GitHub repository to dispatch in, e.g. 'acme/churn-model'"))
        mode = section.get("mode", "workflow_dispatch")
        if mode == "workflow_dispatch" and "workflow" not in section:
            missing.append(("workflow", "the workflow file to dispatch, e.g. 'deploy-model.yml'"))
    elif provider == "gitlab":
        if "project" not in section:
            missing.append(("project", "the GitLab project, e.g. 'acme/churn-model'"))
    elif provider == "azure-devops":
        if "project" not in section:
            missing.append(("project", "the Azure DevOps project name"))
        if "pipeline_id" not in section and "release_definition_id" not in section:
            missing.append(("pipeline_id", "the pipeline to run (or release_definition_id for a classic release)"))
        if "artifact_alias" in section and "artifact_version" not in section:
            missing.append(("artifact_version", "how the artifact's version is found: 'model-version' or 'tag:KEY'"))
    return missing


# ---- validation -----------------------------------------------------------------------------


#: keys people put in a pipeline section that belong in serve's environment instead
ENVIRONMENT_HINTS = {
    "url": "the GitLab server is CI_SERVER_URL in serve's environment (default https://gitlab.com)",
    "server": "the GitLab server is CI_SERVER_URL in serve's environment (default https://gitlab.com)",
    "organization": "the Azure DevOps organization is SYSTEM_COLLECTIONURI in serve's environment",
    "token": "never put a token in a rule file; serve reads GITHUB_TOKEN / GITLAB_TOKEN / AZURE_DEVOPS_EXT_PAT",
    "pat": "never put a token in a rule file; serve reads AZURE_DEVOPS_EXT_PAT",
}


def _unknown(out: _Collector, mapping: _Map, allowed: tuple[str, ...] | list[str], where: str, field: str,
             hints: dict[str, str] | None = None) -> None:
    for key in mapping:
        if key not in allowed:
            out.add(
                mapping.key_lines[key],
                f"{field}.{key}" if field else str(key),
                f"unknown key {str(key)!r} in {where}",
                (hints or {}).get(str(key)) or did_you_mean(key, allowed, "valid keys"),
            )
    for key, line, first in mapping.duplicates:
        out.add(line, f"{field}.{key}" if field else str(key), f"duplicate key {str(key)!r} in {where} (first on line {first})",
                "keep one")


def _strings(out: _Collector, m: _Map, key: str, field: str, glob: bool) -> tuple[str, ...] | None:
    """A string or a non-empty list of strings (numbers are taken as text)."""
    value = m[key]
    line = m.value_lines[key]
    items = value if isinstance(value, list) else [value]
    lines = value.item_lines if isinstance(value, _Seq) else [line]
    if isinstance(value, list) and not value:
        out.add(line, field, f"{field} is an empty list", "remove the key or list at least one value")
        return None
    result = []
    for item, item_line in zip(items, lines):
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            out.add(item_line, field, f"{field} must be a string or a list of strings, got {item!r}",
                    f"quote it: {key}: \"{item}\"" if isinstance(item, (bool, float)) else None)
            return None
        item = str(item)
        if glob:
            try:
                check_glob(item)
            except ValueError as exc:
                out.add(item_line, field, f"bad pattern in {field}: {exc.args[0]}", _hint(exc))
                return None
        result.append(item)
    return tuple(result)


def _string_map(out: _Collector, m: _Map, key: str, field: str, keys: tuple[str, ...] | None) -> dict[str, str] | None:
    value = m[key]
    line = m.value_lines[key]
    if not isinstance(value, _Map):
        out.add(line, field, f"{field} must be a mapping of names to patterns, got {value!r}",
                f"e.g. {key}: {{stage_hint: candidate}}" if key == "tags" else None)
        return None
    if keys is not None:
        _unknown(out, value, keys, field, field)
    result = {}
    ok = True
    for k, v in value.items():
        vline = value.value_lines[k]
        if keys is not None and k not in keys:
            ok = False
            continue
        if v is None:
            out.add(vline, f"{field}.{k}", f"{field}.{k} has no value", "use '*' to require it with any value")
            ok = False
            continue
        if isinstance(v, bool):
            v = "true" if v else "false"
        if not isinstance(v, (str, int, float)):
            out.add(vline, f"{field}.{k}", f"{field}.{k} must be a string pattern, got {v!r}")
            ok = False
            continue
        v = str(v)
        try:
            check_glob(v)
        except ValueError as exc:
            out.add(vline, f"{field}.{k}", f"bad pattern in {field}.{k}: {exc.args[0]}", _hint(exc))
            ok = False
            continue
        result[str(k)] = v
    return result if ok else None


def _match_block(out: _Collector, block: Any, line: int, field: str, nested: bool) -> Match | None:
    where = field
    if block is None:
        out.add(line, field, f"{field} is empty",
                f"list conditions under it, or write {field}: {{}} to match every event" if not nested
                else "list conditions under it, or remove it")
        return None
    if not isinstance(block, _Map):
        out.add(line, field, f"{field} must be a mapping of conditions, got {block!r}",
                "e.g. match: {model: 'churn-*'}")
        return None
    allowed = MATCH_KEYS if not nested else tuple(k for k in MATCH_KEYS if k != "exclude")
    _unknown(out, block, allowed, where, field)
    errors_before = len(out.errors)
    kw: dict[str, Any] = {}
    for key in block:
        if key not in allowed:
            continue
        f = f"{field}.{key}"
        vline = block.value_lines[key]
        if key in ("source", "kind"):
            values = _strings(out, block, key, f, glob=(key == "kind"))
            if values is None:
                continue
            choices = SOURCES if key == "source" else KINDS
            for v in values:
                if key == "source" and v not in SOURCES:
                    out.add(vline, f, f"unknown source {v!r} in {f}", did_you_mean(v, SOURCES, "valid sources"))
                elif key == "kind" and not any(fnmatchcase(k, v) for k in KINDS):
                    out.add(vline, f, f"unknown kind {v!r} in {f}", did_you_mean(v, choices, "valid kinds"))
            kw[key] = values
        elif key in ("model", "alias", "approval_status"):
            kw[key] = _strings(out, block, key, f, glob=True)
        elif key == "version":
            value = block[key]
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                out.add(vline, f, f"{f} must be a string like '>=3' or 'latest', got {value!r}")
                continue
            if isinstance(value, float):
                text = block.texts.get(key, str(value))
                out.add(vline, f, f"{f} {text} is read by YAML as the number {value!r}",
                        f"quote it: version: \"{text}\" (or \"=={text}\" for exactly that version)")
                continue
            try:
                kw[key] = parse_version_spec(str(value))
            except ValueError as exc:
                out.add(vline, f, f"bad version expression {str(value)!r} in {f}: {exc.args[0]}", _hint(exc))
        elif key in ("tags", "registry"):
            kw[key] = _string_map(out, block, key, f, REGISTRY_KEYS if key == "registry" else None)
        elif key == "exclude":
            value = block[key]
            blocks = value if isinstance(value, list) else [value]
            lines = value.item_lines if isinstance(value, _Seq) else [vline]
            if not blocks:
                out.add(vline, f, f"{f} is an empty list", "remove it or add a match block")
                continue
            compiled = []
            for i, (b, bline) in enumerate(zip(blocks, lines)):
                name = f"{f}[{i}]" if isinstance(value, list) else f
                if not b:
                    out.add(bline, name, f"{name} has no conditions, so it would exclude every event",
                            "add conditions (e.g. model: 'churn-test-*') or remove it")
                    continue
                compiled.append(_match_block(out, b, bline, name, nested=True))
            kw[key] = tuple(compiled)
    if len(out.errors) > errors_before:
        return None
    return Match(**{k: v for k, v in kw.items() if v is not None})


def _pipeline(out: _Collector, section: Any, line: int, folder: Path) -> dict | None:
    if section is None:
        return None
    if not isinstance(section, _Map):
        out.add(line, "pipeline", f"pipeline must be a mapping with a provider, got {section!r}",
                "e.g. pipeline: {provider: local}")
        return None
    provider = section.get("provider")
    if provider is None:
        out.add(section.line, "pipeline.provider", "pipeline has no provider",
                "add provider: " + " | ".join(PROVIDERS) + " (or remove pipeline: to only record matches)")
        return None
    if provider in PROVIDER_ALIASES:  # the same backend under its other name
        provider = PROVIDER_ALIASES[provider]
    if provider not in PROVIDERS:
        out.add(section.value_lines["provider"], "pipeline.provider", f"unknown provider {str(provider)!r}",
                did_you_mean(provider, PROVIDERS, "valid providers"))
        return None
    allowed = {**_COMMON, **PIPELINE_KEYS[provider]}
    _unknown(out, section, list(allowed), f"pipeline (provider {provider})", "pipeline", ENVIRONMENT_HINTS)
    for key, value in section.items():
        check = allowed.get(key)
        if check is None:
            continue
        problem = check(value, folder)
        if problem:
            message, hint = problem if isinstance(problem, tuple) else (problem, None)
            out.add(section.value_lines[key], f"pipeline.{key}", f"pipeline.{key}: {message}", hint)
    for key, why in _required(str(provider), section):
        out.add(section.line, f"pipeline.{key}", f"pipeline for provider {provider} needs {key!r}", f"add {key}: {why}")
    if provider == "azure-devops" and "pipeline_id" in section and "release_definition_id" in section:
        out.add(section.key_lines["release_definition_id"], "pipeline.release_definition_id",
                "pipeline has both pipeline_id and release_definition_id", "keep one")
    if section.get("staging_port") is not None and section.get("staging_port") == section.get("production_port"):
        out.add(section.value_lines["production_port"], "pipeline.production_port",
                f"staging_port and production_port are both {section['production_port']}", "use two different ports")
    plain = _plain(section)
    plain["provider"] = provider  # its canonical name (azure-pipelines -> azure-devops)
    return plain


def _rule(out: _Collector, data: Any, line: int, file: Path, index: str) -> Rule | None:
    where = f"rule{index}"
    if not isinstance(data, _Map):
        out.add(line, None, f"{where} must be a mapping with name, match and optional pipeline, got {data!r}")
        return None
    before = len(out.errors)
    _unknown(out, data, RULE_KEYS, where if index else "rule", "")
    name = data.get("name")
    if name is None:
        out.add(data.line, "name", f"{where} has no name", "add name: <unique-rule-name>")
    elif isinstance(name, (bool, int, float)):
        text = data.texts.get("name", str(name))
        out.add(data.value_lines["name"], "name", f"rule name {text} is read by YAML as {name!r}, not as text",
                f'quote it: name: "{text}"')
    elif not isinstance(name, str) or not RULE_NAME.match(name):
        out.add(data.value_lines["name"], "name", f"rule name {name!r} is not valid",
                "use letters, digits, '.', '_' and '-' (at most 100), e.g. 'churn-to-production'")
    if "match" not in data:
        out.add(data.line, "match", f"{where} has no match block",
                "add match: with conditions (e.g. model: 'churn-*'), or match: {} to match every event")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        out.add(data.value_lines["enabled"], "enabled", f"enabled must be true or false, got {enabled!r}")
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        out.add(data.value_lines["description"], "description", f"description must be a string, got {description!r}")
    match = _match_block(out, data.get("match"), data.value_lines.get("match", data.line), "match", nested=False) \
        if "match" in data else None
    pipeline = _pipeline(out, data.get("pipeline"), data.value_lines.get("pipeline", data.line), file.parent) \
        if "pipeline" in data else None
    if "pipeline" in data and data["pipeline"] is None:
        out.add(data.value_lines["pipeline"], "pipeline", "pipeline is empty",
                "add provider: ... or remove pipeline: to only record matches")
    if len(out.errors) > before:
        return None
    return Rule(
        name=name,
        match=match,
        pipeline=pipeline,
        file=file,
        line=data.line,
        enabled=enabled,
        description=description,
        raw_match=_plain(data.get("match") or {}),
    )


def _load_file(path: Path, out: _Collector) -> list[Rule]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        out.add(1, None, f"cannot read rule file: {exc}")
        return []
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        out.add(line, None, f"YAML syntax error: {problem}", "check indentation and quoting around this line")
        return []
    except yaml.YAMLError as exc:
        out.add(1, None, f"YAML error: {exc}")
        return []
    if data is None:
        out.add(1, None, "rule file is empty", "a rule file holds one rule (a mapping) or a list of rules")
        return []
    if isinstance(data, _Seq):
        if not data:
            out.add(data.line, None, "rule file holds an empty list", "add a rule or delete the file")
        return [r for i, (item, line) in enumerate(zip(data, data.item_lines))
                if (r := _rule(out, item, line, path, f"[{i}]")) is not None]
    rule = _rule(out, data, 1, path, "")
    return [rule] if rule else []


def rule_files(directory: str | os.PathLike) -> list[Path]:
    """The rule files in ``directory`` (``*.yml``, ``*.yaml``; not hidden; not recursive), sorted."""
    folder = Path(directory)
    if not folder.exists():
        raise ConfigError(
            f"trigger folder {str(folder)!r} does not exist; create it with rule files (*.yml) "
            "or pass --triggers with the right folder",
            field="triggers",
        )
    if not folder.is_dir():
        raise ConfigError(f"trigger folder {str(folder)!r} is not a folder; pass the folder holding *.yml rules",
                          field="triggers")
    try:
        return sorted(
            p for p in folder.iterdir()
            if p.suffix.lower() in (".yml", ".yaml") and not p.name.startswith(".") and p.is_file()
        )
    except OSError as exc:
        raise ConfigError(f"cannot read trigger folder {str(folder)!r}: {exc.strerror or exc}", field="triggers") from None


def check_rules(directory: str | os.PathLike) -> tuple[list[Rule], list[RuleError]]:
    """Load every rule file in ``directory``; return the valid rules and every error found.

    Raises ``ConfigError`` only when the folder itself is missing.
    """
    rules: list[Rule] = []
    errors: list[RuleError] = []
    seen: dict[str, Rule] = {}
    for path in rule_files(directory):
        out = _Collector(str(path))
        for rule in _load_file(path, out):
            first = seen.get(rule.name)
            if first is not None:
                out.add(rule.line, "name", f"duplicate rule name {rule.name!r} (first defined at {first.location})",
                        "rule names must be unique across the folder; rename one")
                continue
            seen[rule.name] = rule
            rules.append(rule)
        errors.extend(sorted(out.errors, key=lambda e: e.line))
    return rules, errors


#: kinds that announce something to deploy; a rule with a pipeline but no ``kind`` also matches the rest
_REMOVALS = ("model_version.deleted", "model_version.rejected", "alias.deleted", "tag.deleted")


def rule_warnings(rules: list[Rule]) -> list[RuleError]:
    """Rules that load but probably do not do what their author meant (``rules check`` prints them)."""
    warnings = []
    for rule in rules:
        if rule.pipeline is None or not rule.enabled:
            continue
        if not rule.match.kind:
            warnings.append(RuleError(
                str(rule.file), rule.line, "match.kind",
                f"rule {rule.name!r} starts a pipeline but sets no kind, so deletions and rejections "
                f"({', '.join(_REMOVALS)}) start it too",
                "add e.g. kind: model_version.created",
            ))
        elif any(fnmatchcase(removal, k) for k in rule.match.kind for removal in _REMOVALS):
            hits = sorted({r for k in rule.match.kind for r in _REMOVALS if fnmatchcase(r, k)})
            warnings.append(RuleError(
                str(rule.file), rule.line, "match.kind",
                f"rule {rule.name!r} starts a pipeline for {', '.join(hits)}",
                "make sure its pipeline handles a removal, or narrow kind",
            ))
    return warnings


def load_rules(directory: str | os.PathLike) -> list[Rule]:
    """The trigger rules in ``directory`` (files ``*.yml``/``*.yaml``, each one rule or a list).

    Raises ``ConfigError`` listing every error (``file:line: message; suggestion``) when any file
    does not load, and when the folder does not exist. An empty folder gives ``[]``.
    """
    rules, errors = check_rules(directory)
    if errors:
        raise rules_error(errors)
    return rules


def rules_error(errors: list[RuleError]) -> ConfigError:
    if len(errors) == 1:
        message = str(errors[0])
    else:
        message = f"{len(errors)} errors in trigger rules:\n" + "\n".join(f"  {e}" for e in errors)
    first = errors[0]
    return ConfigError(message, field=first.field, file=first.file, line=first.line,
                       errors=[e.to_dict() for e in errors])
