"""The worker: stored events -> trigger rules -> one pipeline run per matched rule, dispatched once.

Runs as a background thread of ``pipeline-plugin serve`` (:meth:`Worker.run_forever`) and as plain
calls for tests and ``events replay`` (:meth:`Worker.drain`, :meth:`Worker.replay`).

For each claimed event:

1. MLflow's ``test_webhook`` example (``event.is_test``) and echoes of pipeline-plugin's own
   write-back (``writeback.is_own_writeback``) are ``ignored`` with a reason; nothing starts.
2. The rules are evaluated; the outcome (``matched``/``unmatched``, the rule names) and one run per
   matched rule that has a ``pipeline:`` section are recorded in one transaction. ``run_id`` is a
   hash of (event id, rule name[, replay generation]) with a unique constraint, so a restart never
   records a run twice. A rule without ``pipeline:`` records the match only.
3. Each run is marked ``dispatching`` (committed) before ``provider.dispatch`` and gets the result
   (status, URL, detail) after. After a crash a run found ``dispatching`` may or may not have
   started: it is dispatched again only when the provider says it is ``idempotent`` (it can tell
   from ``run_id`` whether the run exists); otherwise it is recorded ``unknown`` with a hint, never
   started twice. The same rule applies to a dispatch that raised: retried (with backoff, up to the
   inbox's ``max_attempts``) only for idempotent providers, else recorded ``failed``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from . import writeback
from .errors import PipelinePluginError
from .inbox import Claimed, Decision, Inbox, StoredEvent
from .inbox.leases import keep_claimed
from .inbox.trouble import failure_kind, trouble_for

log = logging.getLogger("pipeline_plugin.worker")

#: run statuses that still need a dispatch; any other (dispatched, succeeded, failed, unknown, or a
#: provider's own word) is final
OPEN_RUN_STATUSES = ("recorded", "dispatching", "error")
#: after a wake-up, how long the serving worker lets deliveries gather before it claims them
GATHER_SECONDS = 0.05
#: ``_process`` finished the event itself (outcome and release in one transaction)
FINISHED = "<finished>"


@dataclass
class RulesContext:
    """What rules may ask about the world: the newest version seen of a model."""

    inbox: Inbox

    def latest_version(self, source: str, registry_key: str, model: str) -> str | None:
        return self.inbox.latest_version(source, registry_key, model)


def _rule_dir(rule: Any, default: Path | None) -> Path | None:
    for attr in ("rules_dir", "directory", "source_dir", "path", "file", "source_file"):
        value = getattr(rule, attr, None)
        if value:
            p = Path(value)
            return p.parent if p.suffix in (".yml", ".yaml") else p
    return default


class Worker:
    def __init__(
        self,
        inbox: Inbox,
        rules: Sequence[Any],
        rules_dir: str | Path | None = None,
        get_provider: Callable[[str], Any] | None = None,
        batch: int = 16,
        allowed_roots: tuple[str, ...] = (),
    ) -> None:
        self.inbox = inbox
        self.allowed_roots = tuple(allowed_roots)  # the listener's fetch.allowed_roots
        self.rules = list(rules)
        self.rules_dir = Path(rules_dir) if rules_dir else None
        self.ctx = RulesContext(inbox)
        self.owner = inbox.new_owner()
        self.wake = threading.Event()
        self._get_provider = get_provider
        self.batch = batch  # events leased per claim (one transaction)
        self.gather = GATHER_SECONDS

    # ---- loops --------------------------------------------------------------------------------
    def drain(self, max_events: int | None = None, until_short: bool = False) -> int:
        """Process events until none is claimable now (with ``until_short``: until a claim got
        fewer than a full batch, so that what keeps arriving is left for the next, larger claim);
        returns how many were processed."""
        done = 0
        while max_events is None or done < max_events:
            limit = self.batch if max_events is None else min(self.batch, max_events - done)
            batch = self.inbox.claim(self.owner, limit=limit)
            if not batch:
                break
            handed_back = 0
            if len(batch) == 1:
                self.process(batch[0])
                done += 1
            else:
                finished, next_up, handed_back = self._decide_batch(batch)
                done += finished
                if next_up is not None:
                    self.process(next_up)
                    done += 1
            if until_short and len(batch) < limit and not handed_back:  # handed-back events are claimed at once
                break
        return done

    def _decide_batch(self, batch: list[Claimed]) -> tuple[int, Claimed | None, int]:
        """Match every pending event of ``batch`` and record all outcomes in one transaction: an
        event without runs is finished there. One event with runs to dispatch is kept (returned,
        with its status updated) and the others are handed back, so that this worker does not hold
        events that other workers could dispatch meanwhile. A model whose event waits for a
        dispatch has its later events handed back undecided: they are matched only after it."""
        decisions: list[Decision] = []
        release: list[str] = []
        failed: list[tuple[Claimed, Exception]] = []
        waiting: set[tuple[str, str, str]] = set()  # models with an event that still has runs to dispatch
        next_up: Claimed | None = None
        finished = 0
        for claimed in batch:
            event = claimed.event
            model = (event.source, event.registry_key(), event.model)
            if model in waiting:
                release.append(claimed.id)
                continue
            decision = None
            if claimed.status == "pending":
                try:
                    decision = self._decide(claimed)
                except Exception as exc:  # noqa: BLE001 - recorded like a failed process(): retried
                    failed.append((claimed, exc))
                    continue
                decisions.append(decision)
                if not decision.runs:
                    finished += 1
                    continue
                claimed.status = decision.status or claimed.status
            waiting.add(model)
            if next_up is None:
                next_up = claimed
            else:
                release.append(claimed.id)
        if decisions or release:
            self.inbox.record_decisions(self.owner, decisions, release)
        for claimed, exc in failed:
            self._failed(claimed, exc)
        return finished + len(failed), next_up, len(release)

    def run_forever(self, stop: threading.Event, poll: float = 1.0) -> None:
        """Process events until ``stop`` is set; ``wake`` (set by the server after a put) cuts the wait."""
        log.info("worker %s started with %d rule(s)", self.owner, len(self.rules))
        trouble = trouble_for(self.inbox)  # one log line per kind of failure, not a traceback per retry
        while not stop.is_set():
            try:
                self.drain(until_short=True)
            except Exception as exc:  # noqa: BLE001 - the worker thread must survive (e.g. disk full); retried
                trouble.failed(exc)
                stop.wait(poll)
            else:
                trouble.recovered()
            if self.wake.wait(poll) and self.gather > 0:
                # deliveries come in bursts: waiting a moment lets one claim take many of them, so
                # they are matched and recorded in one transaction instead of two each
                stop.wait(self.gather)
            self.wake.clear()
        self.inbox.retire_owner(self.owner)

    # ---- one event ----------------------------------------------------------------------------
    def replay(self, event_id: str) -> StoredEvent:
        """Match and dispatch one event again (new generation, new run ids) and return it."""
        claimed = self.inbox.requeue(event_id, self.owner)
        self.process(claimed)
        return self.inbox.get(claimed.id)

    def process(self, claimed: Claimed) -> None:
        try:
            retry_error = self._process(claimed)
        except Exception as exc:  # noqa: BLE001 - recorded, retried, dead-lettered after N attempts
            self._failed(claimed, exc)
            return
        if retry_error is FINISHED:
            return
        if retry_error:
            self.inbox.fail(claimed.id, claimed.owner, retry_error)
        else:
            self.inbox.finish(claimed.id, claimed.owner)

    def _failed(self, claimed: Claimed, exc: Exception) -> None:
        message = exc.message if isinstance(exc, PipelinePluginError) else f"{type(exc).__name__}: {exc}"
        if failure_kind(exc):  # the inbox cannot store (disk full...): a line, no traceback
            log.warning("processing event %s stopped: %s; retried", claimed.id, message)
        else:
            log.error("processing event %s failed", claimed.id, exc_info=exc)
        self.inbox.fail(claimed.id, claimed.owner, message)

    def _process(self, claimed: Claimed) -> str | None:
        """Returns an error text when some run should be retried later, ``FINISHED`` when the event
        was finished with its outcome (one transaction), else None."""
        if claimed.status == "pending":
            decision = self._decide(claimed)
            self.inbox.record_runs(
                claimed.id, claimed.generation, decision.runs, status=decision.status, reason=decision.reason,
                rules=decision.rules, finish_owner=claimed.owner,
            )
            if not decision.runs:
                return FINISHED
        return self._dispatch_runs(claimed)

    def _decide(self, claimed: Claimed) -> Decision:
        """Match the event against the rules: ``ignored`` (a test delivery, an echo of our own
        write-back), else ``matched`` with one run per matched rule that has a pipeline, or
        ``unmatched``. Nothing is written here."""
        event = claimed.event
        reason = ""
        if event.is_test:
            reason = f"test delivery ({event.source_event_type or 'example payload'}): recorded, never starts a pipeline"
        elif writeback.is_own_writeback(event):
            reason = "echo of pipeline-plugin's own write-back (alias/tag it set): never starts a pipeline"
        if reason:
            log.info("event %s ignored: %s", claimed.id, reason)
            return Decision(claimed.id, claimed.generation, [], "ignored", reason)
        from .rules import explain

        results = explain(self.rules, event, self.ctx)
        matched = [r.rule for r in results if r.matched]
        runs = [
            {
                "rule_name": rule.name,
                "provider": str(rule.pipeline.get("provider", "")),
                "pipeline": dict(rule.pipeline),
                "rules_dir": _rule_dir(rule, self.rules_dir),
            }
            for rule in matched
            if getattr(rule, "pipeline", None)
        ]
        names = [rule.name for rule in matched]
        if matched:
            status, reason = "matched", f"matched {len(names)} rule(s)"
        else:
            first = next((r.reason for r in results if r.reason), "")
            status = "unmatched"
            reason = f"no rule matched ({len(results)} checked)" + (f"; e.g. {first}" if first else "")
        log.info("event %s %s/%s v%s: %s %s", claimed.id, event.source, event.model, event.version, status, names)
        return Decision(claimed.id, claimed.generation, runs, status, reason, names)

    def _dispatch_runs(self, claimed: Claimed) -> str | None:
        from .providers import PipelineRun
        from .providers import get_provider as default_get_provider

        get_provider = self._get_provider or default_get_provider
        retry_error = None
        for run in self.inbox.runs(claimed.id, claimed.generation):
            if run.status not in OPEN_RUN_STATUSES:
                continue
            try:
                provider = get_provider(run.provider)
            except PipelinePluginError as exc:
                self._result(run.run_id, "failed", detail=exc.message)
                continue
            except ImportError as exc:  # a provider module that is not installed in this build
                self._result(run.run_id, "failed", detail=f"provider {run.provider!r} is not available: {exc}")
                continue
            idempotent = bool(getattr(provider, "idempotent", False))
            if run.status == "dispatching" and not idempotent:
                self._result(
                    run.run_id,
                    "unknown",
                    detail=(
                        f"the process stopped while dispatching to {run.provider}, which cannot tell whether the "
                        "run started; check the CI system, and start it again with "
                        f"`pipeline-plugin events replay {claimed.id}` if it did not"
                    ),
                )
                continue
            self.inbox.renew(claimed.id, claimed.owner)
            if not self.inbox.mark_dispatching(run.run_id, expect=(run.status,)):
                log.warning("run %s was taken by another worker; skipped", run.run_id)
                continue
            pipeline_run = PipelineRun(
                run_id=run.run_id,
                rule_name=run.rule_name,
                pipeline=run.pipeline,
                event=claimed.event,
                state_dir=self.inbox.state_dir,
                rules_dir=Path(run.rules_dir) if run.rules_dir else None,
                allowed_roots=self.allowed_roots,
            )
            try:
                with keep_claimed(self.inbox, claimed.id, claimed.owner):  # no replica takes it over meanwhile
                    result = provider.dispatch(pipeline_run)
            except Exception as exc:  # noqa: BLE001 - a provider failure is the run's result
                message = exc.message if isinstance(exc, PipelinePluginError) else f"{type(exc).__name__}: {exc}"
                log.warning("dispatch of run %s (%s) failed: %s", run.run_id, run.provider, message)
                if getattr(exc, "details", {}).get("outcome") == "unknown":
                    self._result(run.run_id, "unknown", detail=message)  # may have started: never again by itself
                elif idempotent:
                    self.inbox.record_dispatch(run.run_id, "error", detail=message)
                    retry_error = f"run {run.run_id}: {message}"
                else:
                    self._result(run.run_id, "failed", detail=message)
                continue
            self._result(
                run.run_id, result.status, url=result.url, external_id=result.external_id, detail=result.detail or ""
            )
            log.info("run %s (%s) %s %s", run.run_id, run.provider, result.status, result.url or "")
        return retry_error

    def _result(self, run_id: str, status: str, **kw: Any) -> None:
        self.inbox.record_dispatch(run_id, status, **kw)


def start_workers(state_dir: str | Path, rules: Sequence[Any], rules_dir: str | Path | None, count: int,
                  allowed_roots: tuple[str, ...], stop: threading.Event) -> tuple[list[Worker], list[threading.Thread]]:
    """``count`` workers, each on its own inbox connection, running in daemon threads until ``stop``.

    Several workers run different models' pipelines at once (the inbox keeps each model's events in
    order); a worker matches a whole claimed batch in one transaction and keeps only one event to
    dispatch, handing the others back, so that none hoards the queue."""
    from .inbox.select import open_inbox

    workers = [Worker(open_inbox(state_dir), rules, rules_dir, batch=64, allowed_roots=allowed_roots)
               for _ in range(count)]
    threads = [threading.Thread(target=w.run_forever, args=(stop,), name=f"worker-{i}", daemon=True)
               for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    return workers, threads
