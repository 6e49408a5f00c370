"""Matching: compiled match conditions, ``evaluate`` and ``explain``.

Everything here is pure: no disk, no network. ``load.py`` builds the objects; the worker, the
``rules explain`` command and the renderers call :func:`evaluate` / :func:`explain`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol

from ..events import ModelVersionEvent
from ..writeback import is_own_writeback

# ---- versions -------------------------------------------------------------------------------

NUMERIC_VERSION = re.compile(r"^\d+(?:\.\d+)*$")
OPERATORS = (">=", "<=", "==", "!=", ">", "<")


def is_numeric(version: str) -> bool:
    """``"3"``, ``"1.10.2"``: dot-separated non-negative integers."""
    return NUMERIC_VERSION.fullmatch(version) is not None


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 for two numeric versions; ``1.2`` equals ``1.2.0``."""
    ka, kb = _key(a), _key(b)
    width = max(len(ka), len(kb))
    ka += (0,) * (width - len(ka))
    kb += (0,) * (width - len(kb))
    return (ka > kb) - (ka < kb)


@dataclass(frozen=True)
class VersionSpec:
    """A ``version:`` condition.

    ``mode`` is ``latest`` (the newest version the registry has announced), ``compare`` (clauses
    like ``(">=", "3")``; an operand that is not numeric only works with ``==``/``!=`` and compares
    as text) or ``glob`` (a pattern for non-numeric versions such as image tags: ``v1.*``).
    """

    text: str
    mode: str
    clauses: tuple[tuple[str, str], ...] = ()

    def check(self, version: str) -> tuple[bool, str]:
        if self.mode == "glob":
            ok = fnmatchcase(version, self.text)
            return ok, f"version {version!r} {'matches' if ok else 'does not match'} {self.text!r}"
        numeric = is_numeric(version)
        for op, operand in self.clauses:
            if not is_numeric(operand):  # textual == / !=
                ok = (version == operand) if op == "==" else (version != operand)
            elif not numeric:
                return False, (
                    f"version {version!r} is not numeric, so it does not satisfy {self.text!r}"
                    " (numeric comparisons need versions like 3 or 1.2.0)"
                )
            else:
                c = compare_versions(version, operand)
                ok = {
                    ">=": c >= 0, "<=": c <= 0, ">": c > 0, "<": c < 0, "==": c == 0, "!=": c != 0,
                }[op]
            if not ok:
                return False, f"version {version!r} does not satisfy {op}{operand} (rule says {self.text!r})"
        return True, f"version {version!r} satisfies {self.text!r}"


def parse_version_spec(text: str) -> VersionSpec:
    """Parse a ``version:`` expression or raise ``ValueError`` with the fix."""
    text = text.strip()
    if not text:
        raise ValueError("empty version expression", "use e.g. '>=3', '<10', '==2', '>=3,<10' or 'latest'")
    if text == "latest":
        return VersionSpec(text, "latest")
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1 and not parts[0].startswith(("<", ">", "=", "!")) and not is_numeric(parts[0]):
        _check_glob(parts[0])
        return VersionSpec(text, "glob")
    clauses = []
    for part in parts:
        op = next((o for o in OPERATORS if part.startswith(o)), None)
        operand = part[len(op):].strip() if op else part
        if op is None:
            if part.startswith(("=>", "=<")):
                raise ValueError(f"bad comparison {part!r}", f"did you mean {part[1] + '=' + part[2:]!r}?")
            if part.startswith(("=", "!")):
                raise ValueError(f"bad comparison {part!r}", f"operators are {', '.join(OPERATORS)} (e.g. '==2')")
            op = "=="
        if not operand:
            raise ValueError(f"comparison {part!r} has no version after {op!r}", f"e.g. '{op}3'")
        if operand.startswith(("<", ">", "=", "!")):
            raise ValueError(f"bad comparison {part!r}", f"operators are {', '.join(OPERATORS)} (e.g. '>=3')")
        if not is_numeric(operand) and op not in ("==", "!="):
            raise ValueError(
                f"{op} needs a numeric version such as 3 or 1.2.0, got {operand!r}"
            )
        if not is_numeric(operand) and any(ch in operand for ch in "*?["):
            raise ValueError(f"{operand!r} is a glob", "write a glob alone, without operators or commas")
        if operand == "latest" and len(parts) > 1:
            raise ValueError("'latest' cannot be combined with comparisons", "write version: latest alone")
        clauses.append((op, operand))
    if sum(1 for op, _ in clauses if op == "==") > 1:
        raise ValueError(
            f"{text!r} asks for a version equal to two values, which none is",
            "for one of several versions write a range ('>=2,<4') or a glob ('v1.*')",
        )
    return VersionSpec(text, "compare", tuple(clauses))


# ---- globs ----------------------------------------------------------------------------------


def _check_glob(pattern: str) -> None:
    """fnmatch treats an unclosed ``[`` as a literal; in a rule that is almost always a typo."""
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            j = i + 1
            if j < len(pattern) and pattern[j] == "!":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1
            close = pattern.find("]", j)
            if close < 0:
                raise ValueError(
                    f"unclosed '[' in glob {pattern!r}", "close it (e.g. 'churn-[ab]*') or write '[[]' for a literal '['"
                )
            i = close
        i += 1


def check_glob(pattern: str) -> None:
    """Raise ``ValueError`` when ``pattern`` is not a usable glob."""
    if not pattern:
        raise ValueError("empty pattern", "use '*' to match anything")
    _check_glob(pattern)


def _any_glob(value: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(value, p) for p in patterns)


def _quote_all(patterns: tuple[str, ...]) -> str:
    if len(patterns) == 1:
        return repr(patterns[0])
    return "any of " + ", ".join(repr(p) for p in patterns)


# ---- rules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """The compiled conditions of a ``match:`` (or ``exclude:``) block. ``None``/empty: no condition."""

    source: tuple[str, ...] | None = None
    kind: tuple[str, ...] | None = None  # globs over events.KINDS
    model: tuple[str, ...] | None = None  # globs
    version: VersionSpec | None = None
    tags: Mapping[str, str] = field(default_factory=dict)  # key -> glob
    alias: tuple[str, ...] | None = None  # globs
    approval_status: tuple[str, ...] | None = None  # globs, case-insensitive
    registry: Mapping[str, str] = field(default_factory=dict)  # identity key -> glob
    exclude: tuple["Match", ...] = ()

    @cached_property
    def _names(self) -> tuple[str, ...]:
        return tuple(name for name in CONDITION_ORDER if getattr(self, name))

    def conditions(self) -> list[str]:
        """Names of the conditions this block sets, in evaluation order."""
        return list(self._names)


#: the order conditions are checked in; ``explain`` reports the first that fails
CONDITION_ORDER = ("source", "kind", "registry", "model", "alias", "approval_status", "tags", "version", "exclude")


@dataclass(frozen=True)
class Rule:
    """One trigger rule, as loaded from ``file`` (line ``line`` is where the rule starts).

    ``pipeline`` is the rule's ``pipeline:`` section as plain data (``provider`` plus that
    provider's keys; relative paths are relative to ``directory``) or ``None``: a rule without a
    pipeline records the match and starts nothing. Treat it as read-only.
    """

    name: str
    match: Match
    pipeline: dict[str, Any] | None
    file: Path
    line: int
    enabled: bool = True
    description: str | None = None
    raw_match: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def provider(self) -> str | None:
        return None if self.pipeline is None else self.pipeline.get("provider")

    @property
    def directory(self) -> Path:
        """Where relative paths in ``pipeline`` resolve (``PipelineRun.rules_dir``)."""
        return self.file.parent

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": str(self.file),
            "line": self.line,
            "enabled": self.enabled,
            "description": self.description,
            "match": self.raw_match,
            "provider": self.provider,
            "pipeline": self.pipeline,
        }


@dataclass(frozen=True)
class RuleResult:
    """Whether ``rule`` matched an event. ``reason`` says why (for a miss: the first condition that
    failed, e.g. ``model 'fraud-x' does not match 'churn-*'``); ``condition`` names it."""

    rule: Rule
    matched: bool
    reason: str
    condition: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.name,
            "file": str(self.rule.file),
            "line": self.rule.line,
            "enabled": self.rule.enabled,
            "provider": self.rule.provider,
            "matched": self.matched,
            "condition": self.condition,
            "reason": self.reason,
        }


# ---- context --------------------------------------------------------------------------------


class RuleContext(Protocol):
    """What rules need to know beyond the event itself (the inbox implements it)."""

    def latest_version(self, source: str, registry_key: str, model: str) -> str | None: ...


def newest(versions: Iterable[str]) -> str | None:
    """The newest of ``versions``: the highest numeric one, else the last non-numeric one seen."""
    best: str | None = None
    last_text: str | None = None
    for v in versions:
        if is_numeric(v):
            if best is None or compare_versions(v, best) > 0:
                best = v
        else:
            last_text = v
    return best if best is not None else last_text


class MemoryContext:
    """A :class:`RuleContext` over events held in memory (used when there is no inbox, e.g. by
    ``rules explain``): the newest version seen per (source, registry, model)."""

    def __init__(self, events: Iterable[ModelVersionEvent] = ()) -> None:
        self._versions: dict[tuple[str, str, str], list[str]] = {}
        for event in events:
            self.add(event)

    def add(self, event: ModelVersionEvent) -> None:
        versions = self._versions.setdefault((event.source, event.registry_key(), event.model), [])
        if event.kind == "model_version.deleted":  # like the inbox: a deleted version is not the latest
            while event.version in versions:
                versions.remove(event.version)
        else:
            versions.append(event.version)

    def latest_version(self, source: str, registry_key: str, model: str) -> str | None:
        return newest(self._versions.get((source, registry_key, model), ()))


# ---- evaluation -----------------------------------------------------------------------------


def _check(match: Match, name: str, event: ModelVersionEvent, ctx: RuleContext) -> tuple[bool, str]:
    """Check one condition; return (ok, reason) where reason reads well either way."""
    if name == "source":
        ok = event.source in match.source
        return ok, f"source {event.source!r} {'is' if ok else 'is not'} {_quote_all(match.source)}"
    if name == "kind":
        ok = _any_glob(event.kind, match.kind)
        return ok, f"kind {event.kind!r} {'matches' if ok else 'does not match'} {_quote_all(match.kind)}"
    if name == "model":
        ok = _any_glob(event.model, match.model)
        return ok, f"model {event.model!r} {'matches' if ok else 'does not match'} {_quote_all(match.model)}"
    if name == "alias":
        if not event.alias:
            return False, f"event has no alias (rule wants alias {_quote_all(match.alias)})"
        ok = _any_glob(event.alias, match.alias)
        return ok, f"alias {event.alias!r} {'matches' if ok else 'does not match'} {_quote_all(match.alias)}"
    if name == "approval_status":
        if not event.approval_status:
            return False, f"event has no approval status (rule wants {_quote_all(match.approval_status)})"
        status = event.approval_status.lower()
        ok = any(fnmatchcase(status, p.lower()) for p in match.approval_status)
        verb = "matches" if ok else "does not match"
        return ok, f"approval_status {event.approval_status!r} {verb} {_quote_all(match.approval_status)}"
    if name == "registry":
        for key, pattern in match.registry.items():
            value = event.registry.get(key)
            if value is None:
                return False, f"event's registry has no {key!r} (rule wants registry.{key} {pattern!r})"
            if not fnmatchcase(value, pattern):
                return False, f"registry.{key} {value!r} does not match {pattern!r}"
        return True, "registry " + ", ".join(f"{k}={event.registry[k]!r}" for k in match.registry) + " matches"
    if name == "tags":
        for key, pattern in match.tags.items():
            value = event.tags.get(key)
            if value is None:
                return False, f"event has no tag {key!r} (rule wants {key}={pattern!r})"
            if not fnmatchcase(value, pattern):
                return False, f"tag {key}={value!r} does not match {pattern!r}"
        return True, "tags " + ", ".join(f"{k}={event.tags[k]!r}" for k in match.tags) + " match"
    if name == "version":
        spec = match.version
        if spec.mode != "latest":
            return spec.check(event.version)
        latest = ctx.latest_version(event.source, event.registry_key(), event.model)
        if latest is None or latest == event.version:
            return True, f"version {event.version!r} is the latest of model {event.model!r}"
        if is_numeric(latest) and is_numeric(event.version):
            if compare_versions(event.version, latest) >= 0:
                return True, f"version {event.version!r} is the latest of model {event.model!r}"
        return False, f"version {event.version!r} is not the latest of model {event.model!r} (latest is {latest!r})"
    if name == "exclude":
        for index, block in enumerate(match.exclude):
            hit, why = _all(block, event, ctx)
            if hit:
                return False, f"excluded by exclude[{index}]: {why}"
        return True, "no exclude block matches"
    raise AssertionError(name)  # pragma: no cover - CONDITION_ORDER is closed


def _all(match: Match, event: ModelVersionEvent, ctx: RuleContext) -> tuple[bool, str]:
    condition, why = _first_failure(match, event, ctx)
    return condition is None, why


def _holds(match: Match, name: str, event: ModelVersionEvent) -> bool:
    """The fast path for the commonest conditions, building no text; False: ask ``_check``."""
    if name == "source":
        return event.source in match.source
    if name == "kind":
        return _any_glob(event.kind, match.kind)
    if name == "model":
        return _any_glob(event.model, match.model)
    return False


def _first_failure(match: Match, event: ModelVersionEvent, ctx: RuleContext) -> tuple[str | None, str]:
    """(name of the first failing condition, its reason), or (None, why every condition holds).
    Text is only built for the failing condition, or for all of them when the block holds."""
    held: list[tuple[str, str | None]] = []
    for name in match._names:
        if _holds(match, name, event):
            held.append((name, None))
            continue
        ok, why = _check(match, name, event, ctx)
        if not ok:
            return name, why
        held.append((name, why))
    if not held:
        return None, "no conditions (matches every event)"
    return None, "; ".join(why if why is not None else _check(match, name, event, ctx)[1] for name, why in held)


def evaluate(rule: Rule, event: ModelVersionEvent, ctx: RuleContext | None = None) -> RuleResult:
    """Does ``rule`` match ``event``? Conditions are checked in :data:`CONDITION_ORDER`; a miss
    names the first that failed. ``ctx`` answers ``version: latest``; without one, the event's own
    version counts as the latest.

    Two kinds of event never match any rule (they are recorded, never deployed): a registry's test
    delivery (``event.is_test``, e.g. MLflow's ``test_webhook`` example) and the echo of
    pipeline-plugin's own write-back (``writeback.is_own_writeback``).
    """
    if ctx is None:
        ctx = MemoryContext([event])
    if not rule.enabled:
        condition, reason = _first_failure(rule.match, event, ctx)
        would = "its conditions would match" if condition is None else f"also {reason}"
        return RuleResult(rule, False, f"rule is disabled (enabled: false); {would}", "enabled")
    if event.is_test:
        return RuleResult(rule, False, "event is a registry test delivery: recorded, never starts a pipeline", "event")
    if is_own_writeback(event):
        return RuleResult(
            rule, False, "event is the echo of pipeline-plugin's own write-back: never starts a pipeline", "event"
        )
    condition, reason = _first_failure(rule.match, event, ctx)
    if condition is not None:
        return RuleResult(rule, False, reason, condition)
    return RuleResult(rule, True, reason, None)


def explain(rules: Iterable[Rule], event: ModelVersionEvent, ctx: RuleContext | None = None) -> list[RuleResult]:
    """One :class:`RuleResult` per rule, in the rules' order."""
    if ctx is None:
        ctx = MemoryContext([event])
    return [evaluate(rule, event, ctx) for rule in rules]


def matching(rules: Iterable[Rule], event: ModelVersionEvent, ctx: RuleContext | None = None) -> list[Rule]:
    """The rules that match ``event`` (what the worker turns into pipeline runs)."""
    return [result.rule for result in explain(rules, event, ctx) if result.matched]
