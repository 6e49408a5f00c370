"""Matching: every condition, table-driven, through the real loader (YAML in, RuleResult out)."""

from __future__ import annotations

import pytest
import yaml

from pipeline_plugin.rules import MemoryContext, evaluate, explain, load_rules, matching

from .helpers import event, write


def rule_for(tmp_path, match, **rule_keys):
    doc = {"name": "r", "match": match, **rule_keys}
    write(tmp_path, "r.yml", yaml.safe_dump(doc))
    (rule,) = load_rules(tmp_path)
    return rule


# (match block, event fields, matched?, failing condition, text the reason must contain)
CASES = [
    # source
    ({"source": "mlflow"}, {}, True, None, "source 'mlflow' is 'mlflow'"),
    ({"source": "azureml"}, {}, False, "source", "source 'mlflow' is not 'azureml'"),
    ({"source": ["azureml", "mlflow"]}, {}, True, None, "any of 'azureml', 'mlflow'"),
    # kind: one, a list, a glob
    ({"kind": "model_version.created"}, {}, True, None, "kind 'model_version.created' matches"),
    ({"kind": "alias.set"}, {}, False, "kind", "kind 'model_version.created' does not match 'alias.set'"),
    ({"kind": ["alias.set", "model_version.created"]}, {}, True, None, "matches any of"),
    ({"kind": "model_version.*"}, {"kind": "model_version.approved"}, True, None, "matches 'model_version.*'"),
    # model: glob, list of globs, case-sensitive
    ({"model": "churn-*"}, {}, True, None, "model 'churn-model' matches 'churn-*'"),
    ({"model": "churn-*"}, {"model": "fraud-x"}, False, "model", "model 'fraud-x' does not match 'churn-*'"),
    ({"model": ["fraud-*", "churn-?odel"]}, {}, True, None, "matches any of 'fraud-*', 'churn-?odel'"),
    ({"model": "churn-[mx]*"}, {}, True, None, "matches"),
    ({"model": "Churn-*"}, {}, False, "model", "does not match 'Churn-*'"),
    ({"model": "churn-model"}, {"model": "churn-model-2"}, False, "model", "does not match"),
    # version: comparisons, ranges, exact, numeric ordering, dotted, non-numeric
    ({"version": ">=3"}, {"version": "3"}, True, None, "satisfies '>=3'"),
    ({"version": ">=3"}, {"version": "2"}, False, "version", "version '2' does not satisfy >=3"),
    ({"version": ">=3"}, {"version": "10"}, True, None, "satisfies"),  # numeric, not text, order
    ({"version": "<10"}, {"version": "9"}, True, None, "satisfies"),
    ({"version": "<10"}, {"version": "10"}, False, "version", "does not satisfy <10"),
    ({"version": ">2"}, {"version": "2"}, False, "version", "does not satisfy >2"),
    ({"version": "<=2"}, {"version": "2"}, True, None, "satisfies"),
    ({"version": "==2"}, {"version": "2"}, True, None, "satisfies"),
    ({"version": "==2"}, {"version": "3"}, False, "version", "does not satisfy ==2"),
    ({"version": "3"}, {"version": "3"}, True, None, "satisfies '3'"),
    ({"version": 3}, {"version": "4"}, False, "version", "does not satisfy ==3"),
    ({"version": "!=4"}, {"version": "4"}, False, "version", "does not satisfy !=4"),
    ({"version": ">=3,<10"}, {"version": "5"}, True, None, "satisfies '>=3,<10'"),
    ({"version": ">=3,<10"}, {"version": "10"}, False, "version", "does not satisfy <10"),
    ({"version": ">=3, <10"}, {"version": "2"}, False, "version", "does not satisfy >=3"),
    ({"version": ">=1.9"}, {"version": "1.10.0"}, True, None, "satisfies"),
    ({"version": "==1.2"}, {"version": "1.2.0"}, True, None, "satisfies"),
    ({"version": ">=3"}, {"version": "abc123"}, False, "version", "version 'abc123' is not numeric"),
    ({"version": "!=3"}, {"version": "v3"}, False, "version", "is not numeric"),
    ({"version": "==main"}, {"version": "main"}, True, None, "satisfies"),
    ({"version": "!=latest"}, {"version": "latest"}, False, "version", "does not satisfy !=latest"),
    ({"version": "v1.*"}, {"version": "v1.4"}, True, None, "version 'v1.4' matches 'v1.*'"),
    ({"version": "v1.*"}, {"version": "v2.0"}, False, "version", "version 'v2.0' does not match 'v1.*'"),
    # tags: all must match, glob values, missing tag
    ({"tags": {"stage_hint": "candidate"}}, {"tags": {"stage_hint": "candidate"}}, True, None, "stage_hint='candidate'"),
    ({"tags": {"stage_hint": "cand*"}}, {"tags": {"stage_hint": "candidate", "x": "1"}}, True, None, "match"),
    ({"tags": {"stage_hint": "candidate"}}, {"tags": {"stage_hint": "archived"}}, False, "tags",
     "tag stage_hint='archived' does not match 'candidate'"),
    ({"tags": {"stage_hint": "*", "team": "risk"}}, {"tags": {"stage_hint": "x"}}, False, "tags",
     "event has no tag 'team'"),
    ({"tags": {"validated": True}}, {"tags": {"validated": "true"}}, True, None, "validated='true'"),
    ({"tags": {"score": 1}}, {"tags": {"score": "1"}}, True, None, "score='1'"),
    # alias
    ({"alias": "champion"}, {"kind": "alias.set", "alias": "champion"}, True, None, "alias 'champion' matches"),
    ({"alias": ["champ*", "prod"]}, {"kind": "alias.set", "alias": "challenger"}, False, "alias",
     "alias 'challenger' does not match any of 'champ*', 'prod'"),
    ({"alias": "champion"}, {}, False, "alias", "event has no alias"),
    # approval_status: case-insensitive
    ({"approval_status": "approved"}, {"approval_status": "Approved"}, True, None, "matches 'approved'"),
    ({"approval_status": "Approved"}, {"approval_status": "PendingManualApproval"}, False, "approval_status",
     "approval_status 'PendingManualApproval' does not match 'Approved'"),
    ({"approval_status": "Approved"}, {}, False, "approval_status", "event has no approval status"),
    # registry identity
    ({"registry": {"tracking_uri": "http://mlflow.internal:*"}}, {}, True, None, "registry tracking_uri="),
    ({"registry": {"tracking_uri": "http://mlflow.prod:*"}}, {}, False, "registry",
     "registry.tracking_uri 'http://mlflow.internal:5000' does not match 'http://mlflow.prod:*'"),
    ({"registry": {"workspace": "mlw-*"}}, {}, False, "registry", "event's registry has no 'workspace'"),
    ({"registry": {"model_package_group": "churn-*"}},
     {"source": "sagemaker", "registry": {"model_package_group": "churn-model-group", "region": "us-east-2"}},
     True, None, "model_package_group='churn-model-group'"),
    # exclude: one block, a list of blocks, all conditions of a block must hold to exclude
    ({"model": "churn-*", "exclude": {"model": "churn-test-*"}}, {"model": "churn-test-1"}, False, "exclude",
     "excluded by exclude[0]: model 'churn-test-1' matches 'churn-test-*'"),
    ({"model": "churn-*", "exclude": {"model": "churn-test-*"}}, {}, True, None, "no exclude block matches"),
    ({"exclude": [{"tags": {"experiment": "*"}}, {"version": "<2"}]}, {"version": "1"}, False, "exclude",
     "excluded by exclude[1]: version '1' satisfies '<2'"),
    ({"exclude": {"model": "churn-*", "version": "<2"}}, {"version": "3"}, True, None, "no exclude block matches"),
    # no conditions at all
    ({}, {}, True, None, "no conditions"),
]


@pytest.mark.parametrize("match,fields,matched,condition,reason", CASES)
def test_condition(tmp_path, match, fields, matched, condition, reason):
    rule = rule_for(tmp_path, match)
    result = evaluate(rule, event(**fields))
    assert (result.matched, result.condition) == (matched, condition), result.reason
    assert reason in result.reason


def test_first_failing_condition_is_reported(tmp_path):
    rule = rule_for(tmp_path, {"source": "mlflow", "kind": "alias.set", "model": "fraud-*", "version": ">=9"})
    result = evaluate(rule, event())
    assert result.condition == "kind"
    assert result.reason == "kind 'model_version.created' does not match 'alias.set'"


def test_issue_example(tmp_path):
    rule = rule_for(
        tmp_path,
        {"source": "mlflow", "kind": "model_version.created", "model": "churn-*", "version": ">=3",
         "tags": {"stage_hint": "candidate"}},
    )
    assert evaluate(rule, event(tags={"stage_hint": "candidate"})).matched
    miss = evaluate(rule, event(model="fraud-x", tags={"stage_hint": "candidate"}))
    assert miss.reason == "model 'fraud-x' does not match 'churn-*'"


def test_disabled_rule_never_matches(tmp_path):
    rule = rule_for(tmp_path, {}, enabled=False)
    result = evaluate(rule, event())
    assert (result.matched, result.condition) == (False, "enabled")
    assert result.reason == "rule is disabled (enabled: false); its conditions would match"
    picky = rule_for(tmp_path, {"model": "fraud-*"}, enabled=False)
    assert evaluate(picky, event()).reason == (
        "rule is disabled (enabled: false); also model 'churn-model' does not match 'fraud-*'"
    )


def test_test_delivery_and_own_writeback_never_match(tmp_path):
    rule = rule_for(tmp_path, {})
    test_delivery = evaluate(rule, event(model="example_model", is_test=True))
    assert (test_delivery.matched, test_delivery.condition) == (False, "event")
    echo = evaluate(rule, event(kind="alias.set", alias="production"))
    assert (echo.matched, echo.condition) == (False, "event")
    assert "write-back" in echo.reason
    assert evaluate(rule, event(kind="alias.set", alias="champion")).matched


class Inbox:
    """A context like the inbox: the newest version it has stored per model."""

    def __init__(self, latest):
        self.latest = latest
        self.calls = []

    def latest_version(self, source, registry_key, model):
        self.calls.append((source, registry_key, model))
        return self.latest


def test_version_latest_asks_the_context(tmp_path):
    rule = rule_for(tmp_path, {"version": "latest"})
    ev = event(version="3")
    stale = evaluate(rule, ev, Inbox("5"))
    assert (stale.matched, stale.condition) == (False, "version")
    assert stale.reason == "version '3' is not the latest of model 'churn-model' (latest is '5')"
    ctx = Inbox("3")
    assert evaluate(rule, ev, ctx).matched
    assert ctx.calls == [("mlflow", "tracking_uri=http://mlflow.internal:5000", "churn-model")]
    # a version newer than anything stored yet is the latest; so is the only one
    assert evaluate(rule, ev, Inbox("2")).matched
    assert evaluate(rule, ev, Inbox(None)).matched
    # non-numeric versions: only the latest one itself
    assert not evaluate(rule, event(version="abc"), Inbox("def")).matched
    # without a context, the event's own version counts as the latest
    assert evaluate(rule, ev).matched


def test_memory_context_tracks_newest_per_model_and_registry():
    ctx = MemoryContext([event(version="2"), event(version="10"), event(version="9"),
                         event(model="other", version="50"),
                         event(version="70", registry={"tracking_uri": "http://elsewhere"})])
    key = event().registry_key()
    assert ctx.latest_version("mlflow", key, "churn-model") == "10"
    assert ctx.latest_version("mlflow", key, "nope") is None
    ctx.add(event(version="10", kind="model_version.deleted"))
    assert ctx.latest_version("mlflow", key, "churn-model") == "9"
    assert MemoryContext([event(version="a"), event(version="b")]).latest_version("mlflow", key, "churn-model") == "b"


def test_explain_and_matching_keep_rule_order(tmp_path):
    write(tmp_path, "rules.yml", """
        - name: b-any-churn
          match: {model: "churn-*"}
        - name: a-fraud
          match: {model: "fraud-*"}
        - name: c-latest
          match: {version: latest}
    """)
    rules = load_rules(tmp_path)
    ev = event(version="2")
    results = explain(rules, ev, Inbox("4"))
    assert [(r.rule.name, r.matched, r.condition) for r in results] == [
        ("b-any-churn", True, None),
        ("a-fraud", False, "model"),
        ("c-latest", False, "version"),
    ]
    assert [r.name for r in matching(rules, ev)] == ["b-any-churn", "c-latest"]
    d = results[1].to_dict()
    assert d["rule"] == "a-fraud" and d["matched"] is False and d["condition"] == "model"
    assert d["file"].endswith("rules.yml") and d["line"] == 3
