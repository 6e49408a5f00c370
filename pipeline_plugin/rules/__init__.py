"""Declarative trigger rules: which registry events start which pipelines.

A folder (``triggers/``) holds rule files ``*.yml`` / ``*.yaml``; each file holds one rule or a
list of rules; rule names are unique across the folder. ``triggers/README.md`` is the user guide.

Rule keys: ``name`` (required), ``description``, ``enabled`` (default true; a disabled rule is
validated but never matches), ``match`` (required; ``{}`` matches every event), ``pipeline``
(optional: without it a match is recorded and nothing starts).

``match`` conditions (all given conditions must hold; checked in this order, and ``explain``
names the first that fails):

- ``source``: a source name or list (``mlflow``, ``azureml``, ``sagemaker``, ``huggingface``,
  ``docker-registry``, ``cloudevents``, ``databricks``, ``wandb``)
- ``kind``: an event kind or list; globs allowed (``model_version.*``)
- ``registry``: identity keys -> globs: ``tracking_uri``, ``workspace``, ``subscription``,
  ``resource_group``, ``model_package_group``, ``account``, ``region``, ``repository``, ``host``,
  ``entity``, ``project``
- ``model``: a glob or list of globs (case-sensitive)
- ``alias``: glob or list (the event must carry an alias)
- ``approval_status``: glob or list, case-insensitive (``Approved``)
- ``tags``: tag -> glob; every listed tag must be present and match (``'*'``: any value)
- ``version``: ``latest``; comparisons ``>=3``, ``<10``, ``==2``, ``!=4``, ``3`` (same as ``==3``),
  ranges ``>=3,<10``; numeric versions are dot-separated integers (``1.10.2`` > ``1.9``); a
  non-numeric version never satisfies a numeric comparison. ``==text`` / ``!=text`` compare text;
  a lone non-numeric value without an operator is a glob (``v1.*``, for image tags)
- ``exclude``: a match block (or list of blocks, without nested ``exclude``); an event that
  matches any of them is excluded

A registry's test delivery (``event.is_test``) and the echo of pipeline-plugin's own write-back
never match (see ``evaluate``).

``pipeline`` keys: ``provider`` (``local``, ``github``, ``gitlab``, ``azure-devops``); common
``service`` (lower-case DNS label), ``approval`` (bool); the stage settings ``entry_script``,
``source_dir``, ``requirements``, ``conda``, ``sample``, ``expect``, ``config`` (paths),
``tolerance`` (number >= 0), ``base_image``, ``image_repository``, ``target`` (a ``targets``
backend), ``staging_port``, ``production_port``, ``strategy`` (``stages.promote.STRATEGIES``).
For ``local`` the paths are relative to the rule file and must exist; for the CI providers they
are paths inside the CI repository, and every value must match the rendered pipeline's pattern
(``render.SETTINGS``). Then per provider (``PIPELINE_KEYS``):

- ``github``: ``repository`` (owner/name, required), ``workflow`` (file name or id; required for
  ``mode: workflow_dispatch``, the default), ``ref``, ``mode`` (``workflow_dispatch`` |
  ``repository_dispatch``), ``event_type``, ``inputs``; rendering: ``runs_on``, ``action``, ``database_secret``;
  added: ``return_run_details`` (bool, read by ``providers.github``)
- ``gitlab``: ``project`` (required), ``ref``, ``trigger_token_env`` (the NAME of an environment
  variable, never the token), ``variables``; rendering: ``image``. The server is
  ``CI_SERVER_URL`` (environment), not a rule key.
- ``azure-devops``: ``project`` (required), ``pipeline_id`` or ``release_definition_id`` (one
  required), ``artifact_alias`` + ``artifact_version``, ``ref``, ``parameters``; rendering: ``vm_image``, ``pool``, ``database_secret``. The
  organization is ``SYSTEM_COLLECTIONURI`` (environment), not a rule key.
- every CI provider (rendering): ``forward_tags`` (list of tag names), ``install``, ``python``

API::

    rules = load_rules("triggers")            # ConfigError listing every problem
    result = evaluate(rule, event, ctx)      # RuleResult(rule, matched, reason, condition)
    results = explain(rules, event, ctx)     # one RuleResult per rule
    runs_for = matching(rules, event, ctx)   # the rules that matched

``ctx`` is any object with ``latest_version(source, registry_key, model) -> str | None`` (the inbox);
:class:`MemoryContext` is the in-memory one; ``ctx=None`` lets the event's own version count as the
latest.
"""

from __future__ import annotations

from .load import PIPELINE_KEYS, PROVIDERS, RuleError, check_rules, load_rules, rule_files, rule_warnings
from .match import (
    CONDITION_ORDER,
    Match,
    MemoryContext,
    Rule,
    RuleContext,
    RuleResult,
    VersionSpec,
    compare_versions,
    evaluate,
    explain,
    is_numeric,
    matching,
    parse_version_spec,
)

__all__ = [
    "CONDITION_ORDER",
    "PIPELINE_KEYS",
    "PROVIDERS",
    "Match",
    "MemoryContext",
    "Rule",
    "RuleContext",
    "RuleError",
    "RuleResult",
    "VersionSpec",
    "check_rules",
    "compare_versions",
    "evaluate",
    "explain",
    "is_numeric",
    "load_rules",
    "matching",
    "parse_version_spec",
    "rule_files",
    "rule_warnings",
]
