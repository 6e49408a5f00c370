"""What commands print: JSON for machines (``--json``), lines for people, progress on stderr."""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def emit(args: Any, data: Any, human: str | None = None) -> None:
    """Print ``data`` as JSON when ``--json`` was given, else the human text (or the JSON)."""
    if getattr(args, "json", False) or human is None:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(human)


class Progress:
    """Progress lines for long operations, on stderr so that --json stdout stays clean."""

    def __init__(self, enabled: bool = True, stream: Any = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        if self.enabled:
            elapsed = time.monotonic() - self.started
            print(f"[{elapsed:6.1f}s] {message}", file=self.stream, flush=True)


def add_json_flag(parser: Any) -> None:
    parser.add_argument("--json", action="store_true", help="print a machine-readable JSON result on stdout")
