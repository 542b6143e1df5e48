"""``ampbridge usage``: what the usage ledger says about a period, as text or JSON.

The question it answers first is the one a user has: how many calls and tokens were served
locally (LOCAL and MAPPED: no Amp credits used) against those forwarded on Amp credits; then
errors and latency. Rows are grouped by served model, decision, provider or UTC day. The ledger
is opened read-only, so this runs safely while the server writes.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .ledger import TABLE, default_ledger_path

LOCAL_DECISIONS = frozenset({"LOCAL", "MAPPED"})
CREDIT_DECISIONS = frozenset({"AMP_CREDITS"})
_TOKEN_COLUMNS = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cache_read": "cache_read_tokens",
    "cache_creation": "cache_creation_tokens",
}
_COLUMNS = (
    "time",
    "decision",
    "provider",
    "served_model",
    "status",
    "duration_ms",
    "ttfb_ms",
    *_TOKEN_COLUMNS.values(),
)
_SPAN = re.compile(r"^(\d+(?:\.\d+)?)\s*([mhdw])$")
_SPAN_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str) -> timedelta | datetime:
    """``7d``, ``24h``, ``30m``, ``2w``, or an ISO date or time (UTC unless it says otherwise)."""
    span = _SPAN.match(text.strip().lower())
    if span:
        return timedelta(**{_SPAN_UNITS[span.group(2)]: float(span.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a period (7d, 24h, 30m, 2w) or a date (2026-05-01)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def since_timestamp(since: timedelta | datetime, now: float) -> float:
    return now - since.total_seconds() if isinstance(since, timedelta) else since.timestamp()


def _day(row: sqlite3.Row) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(row["time"]))


GROUPINGS: dict[str, Callable[[sqlite3.Row], str]] = {
    "model": lambda row: row["served_model"],
    "decision": lambda row: row["decision"],
    "provider": lambda row: row["provider"],
    "day": _day,
}


def read_rows(path: Path, since: float) -> list[sqlite3.Row]:
    """The rows since ``since`` (Unix seconds); none when the ledger does not exist yet."""
    if not path.exists():
        return []
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        connection.row_factory = sqlite3.Row
        return connection.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM {TABLE} WHERE time >= ? ORDER BY time", (since,)
        ).fetchall()
    finally:
        connection.close()


def _percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return None
    return round(values[max(0, math.ceil(fraction * len(values)) - 1)], 1)


def _tokens(rows: Iterable[sqlite3.Row]) -> dict[str, int]:
    totals = dict.fromkeys(_TOKEN_COLUMNS, 0)
    for row in rows:
        for name, column in _TOKEN_COLUMNS.items():
            totals[name] += row[column] or 0
    return totals


def _share(rows: Sequence[sqlite3.Row], decisions: frozenset[str]) -> dict[str, Any]:
    chosen = [row for row in rows if row["decision"] in decisions]
    return {"calls": len(chosen), "tokens": _tokens(chosen)}


def summarize(rows: Sequence[sqlite3.Row]) -> dict[str, Any]:
    durations = sorted(row["duration_ms"] for row in rows)
    ttfbs = sorted(row["ttfb_ms"] for row in rows if row["ttfb_ms"] is not None)
    return {
        "calls": len(rows),
        "errors": sum(1 for row in rows if row["status"] == 0 or row["status"] >= 400),
        "tokens": _tokens(rows),
        "local": _share(rows, LOCAL_DECISIONS),
        "amp_credits": _share(rows, CREDIT_DECISIONS),
        "latency_ms": {"p50": _percentile(durations, 0.5), "p95": _percentile(durations, 0.95)},
        "ttfb_ms": {"p50": _percentile(ttfbs, 0.5), "p95": _percentile(ttfbs, 0.95)},
    }


def usage_report(path: Path, *, since: float, by: str, now: float) -> dict[str, Any]:
    """The report that ``--json`` prints (its schema is in the README)."""
    rows = read_rows(path, since)
    grouped: dict[str, list[sqlite3.Row]] = {}
    for row in rows:
        grouped.setdefault(GROUPINGS[by](row), []).append(row)
    groups = [{"key": key, **summarize(members)} for key, members in grouped.items()]
    if by == "day":
        groups.sort(key=lambda group: group["key"])
    else:
        groups.sort(key=lambda group: (-group["calls"], group["key"]))
    return {
        "ledger": str(path),
        "since": _iso(since),
        "until": _iso(now),
        "by": by,
        "total": summarize(rows),
        "groups": groups,
    }


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def format_text(report: dict[str, Any]) -> str:
    total = report["total"]
    local, credits = total["local"], total["amp_credits"]
    lines = [
        f"usage since {report['since']} (ledger: {report['ledger']})",
        f"  served locally: {local['calls']:,} calls, {local['tokens']['input']:,} input + "
        f"{local['tokens']['output']:,} output tokens kept off Amp credits",
        f"  on Amp credits: {credits['calls']:,} calls, {credits['tokens']['input']:,} input + "
        f"{credits['tokens']['output']:,} output tokens",
        f"  errors: {total['errors']:,} of {total['calls']:,} calls",
        f"  latency: p50 {_ms(total['latency_ms']['p50'])} ms, p95 {_ms(total['latency_ms']['p95'])} ms; "
        f"first byte: p50 {_ms(total['ttfb_ms']['p50'])} ms",
    ]
    if not report["groups"]:
        return "\n".join([*lines, "  no calls recorded in this period"])
    header = ("calls", "errors", "input", "output", "cache read", "local", "p50 ms", "p95 ms")
    table = [
        (
            group["key"],
            f"{group['calls']:,}",
            f"{group['errors']:,}",
            f"{group['tokens']['input']:,}",
            f"{group['tokens']['output']:,}",
            f"{group['tokens']['cache_read']:,}",
            f"{group['local']['calls']:,}",
            _ms(group["latency_ms"]["p50"]),
            _ms(group["latency_ms"]["p95"]),
        )
        for group in report["groups"]
    ]
    first = max(len(f"by {report['by']}"), *(len(row[0]) for row in table))
    widths = [max(len(name), *(len(row[i + 1]) for row in table)) for i, name in enumerate(header)]
    lines.append("")
    lines.append(
        f"{'by ' + report['by']:<{first}}  "
        + "  ".join(f"{n:>{w}}" for n, w in zip(header, widths, strict=True))
    )
    for row in table:
        lines.append(
            f"{row[0]:<{first}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(row[1:], widths, strict=True))
        )
    return "\n".join(lines)


def cmd_usage(args: argparse.Namespace) -> int:
    now = time.time()
    path = Path(args.db).expanduser() if args.db else default_ledger_path()
    try:
        report = usage_report(path, since=since_timestamp(args.since, now), by=args.by, now=now)
    except sqlite3.Error as error:
        print(f"ampbridge: cannot read the usage ledger {path}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else format_text(report))
    return 0


def register(subparsers: Any) -> None:
    """Adds ``usage`` to the CLI's subcommands (``argparse``'s ``add_subparsers()`` result)."""
    usage = subparsers.add_parser("usage", help="calls and tokens served locally vs on Amp credits")
    usage.add_argument(
        "--since",
        type=parse_since,
        default=timedelta(days=7),
        help="period to report: 7d, 24h, 30m, 2w, or a date like 2026-05-01 (default: 7d)",
    )
    usage.add_argument(
        "--by", choices=sorted(GROUPINGS), default="decision", help="group rows by (default: decision)"
    )
    usage.add_argument("--json", action="store_true", help="print the report as JSON")
    usage.add_argument("--db", help="the ledger file (default: usage.db in the user data dir)")
    usage.set_defaults(run=cmd_usage)
