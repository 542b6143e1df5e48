"""``ampbridge usage``: the report matches the calls the ledger recorded."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from ampbridge.ledger import UsageLedger, UsageRow
from ampbridge.usage_report import register

NOW = time.time()
DAY = 86400.0


def call(
    decision: str,
    served: str,
    tokens: tuple[int, int, int, int] | None,
    *,
    status: int = 200,
    duration_ms: float,
    ago: float = 60.0,
    provider: str = "anthropic",
    requested: str | None = None,
) -> UsageRow:
    input_tokens, output_tokens, cache_read, cache_creation = tokens or (None, None, None, None)
    return UsageRow(
        time=NOW - ago,
        decision=decision,
        client="client-1",
        provider=provider,
        requested_model=requested or served,
        served_model=served,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_creation_tokens=cache_creation,
        status=status,
        duration_ms=duration_ms,
        ttfb_ms=duration_ms / 10,
    )


CALLS = [
    call("LOCAL", "claude-opus-4-7", (100, 10, 50, 0), duration_ms=100),
    call("LOCAL", "claude-opus-4-7", (200, 20, 0, 5), duration_ms=200),
    call("LOCAL", "claude-opus-4-7", (300, 30, 0, 0), duration_ms=300, ago=2 * DAY),
    call("MAPPED", "claude-opus-4-7", (1000, 100, 0, 0), duration_ms=400, requested="claude-opus-9"),
    call("AMP_CREDITS", "gpt-5", (10, 1, 0, 0), duration_ms=500, provider="openai"),
    call("AMP_CREDITS", "gpt-5", None, status=502, duration_ms=600, provider="openai"),
    call("NO_PROVIDER", "mystery", None, status=404, duration_ms=50, provider="openai"),
    call("LOCAL", "claude-opus-4-7", (5000, 500, 0, 0), duration_ms=900, ago=10 * DAY),  # before 7d
]


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    ledger = UsageLedger(tmp_path / "usage.db", retention_days=0)
    for row in CALLS:
        ledger.record(row)
    assert anyio.run(ledger.flush) == len(CALLS)
    return tmp_path / "usage.db"


def usage(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="ampbridge")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["usage", *argv])
    status = args.run(args)
    return status, capsys.readouterr().out


def expected_totals(rows: list[UsageRow]) -> dict[str, Any]:
    def tokens(chosen: list[UsageRow]) -> dict[str, int]:
        return {
            "input": sum(r.input_tokens or 0 for r in chosen),
            "output": sum(r.output_tokens or 0 for r in chosen),
            "cache_read": sum(r.cache_read_tokens or 0 for r in chosen),
            "cache_creation": sum(r.cache_creation_tokens or 0 for r in chosen),
        }

    local = [r for r in rows if r.decision in ("LOCAL", "MAPPED")]
    credits = [r for r in rows if r.decision == "AMP_CREDITS"]
    return {
        "calls": len(rows),
        "errors": sum(1 for r in rows if r.status >= 400),
        "tokens": tokens(rows),
        "local": {"calls": len(local), "tokens": tokens(local)},
        "amp_credits": {"calls": len(credits), "tokens": tokens(credits)},
    }


def test_json_report_totals_match_the_recorded_calls(
    ledger_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = usage("--json", "--db", str(ledger_path), capsys=capsys)
    assert status == 0
    report = json.loads(out)
    recent = CALLS[:-1]
    total = report["total"]
    assert {
        key: total[key] for key in ("calls", "errors", "tokens", "local", "amp_credits")
    } == expected_totals(recent)
    assert total["local"]["tokens"]["input"] == 1600  # kept off Amp credits
    # durations 50, 100, 200, 300, 400, 500, 600 ms: nearest rank p50 = 4th, p95 = 7th
    assert total["latency_ms"] == {"p50": 300.0, "p95": 600.0}
    assert total["ttfb_ms"] == {"p50": 30.0, "p95": 60.0}
    assert report["by"] == "decision"
    assert report["ledger"] == str(ledger_path)
    assert [group["key"] for group in report["groups"]] == ["LOCAL", "AMP_CREDITS", "MAPPED", "NO_PROVIDER"]
    by_key = {group["key"]: group for group in report["groups"]}
    assert by_key["AMP_CREDITS"]["calls"] == 2 and by_key["AMP_CREDITS"]["errors"] == 1
    assert by_key["LOCAL"]["tokens"] == {"input": 600, "output": 60, "cache_read": 50, "cache_creation": 5}


def test_since_widens_the_period(ledger_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out = usage("--json", "--since", "30d", "--db", str(ledger_path), capsys=capsys)
    assert json.loads(out)["total"]["calls"] == len(CALLS)
    _, out = usage("--json", "--since", "1d", "--db", str(ledger_path), capsys=capsys)
    assert json.loads(out)["total"]["calls"] == len(CALLS) - 2


def test_grouping_by_model_provider_and_day(ledger_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out = usage("--json", "--by", "model", "--db", str(ledger_path), capsys=capsys)
    by_model = {g["key"]: g for g in json.loads(out)["groups"]}
    assert set(by_model) == {"claude-opus-4-7", "gpt-5", "mystery"}
    assert by_model["claude-opus-4-7"]["local"]["calls"] == 4  # LOCAL and MAPPED both serve it
    _, out = usage("--json", "--by", "provider", "--db", str(ledger_path), capsys=capsys)
    assert {g["key"]: g["calls"] for g in json.loads(out)["groups"]} == {"anthropic": 4, "openai": 3}
    _, out = usage("--json", "--by", "day", "--since", "30d", "--db", str(ledger_path), capsys=capsys)
    days = [g["key"] for g in json.loads(out)["groups"]]
    expected_days = sorted({time.strftime("%Y-%m-%d", time.gmtime(row.time)) for row in CALLS})
    assert days == expected_days


def test_text_report_says_what_was_served_locally(
    ledger_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = usage("--db", str(ledger_path), capsys=capsys)
    assert status == 0
    assert "served locally: 4 calls, 1,600 input + 160 output tokens kept off Amp credits" in out
    assert "on Amp credits: 2 calls, 10 input + 1 output tokens" in out
    assert "errors: 2 of 7 calls" in out
    assert any(line.startswith("LOCAL ") and " 3 " in line for line in out.splitlines())


def test_no_ledger_yet_is_an_empty_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = usage("--json", "--db", str(tmp_path / "none.db"), capsys=capsys)
    assert status == 0
    report = json.loads(out)
    assert report["total"]["calls"] == 0 and report["groups"] == []
    assert report["total"]["latency_ms"] == {"p50": None, "p95": None}
    _, text = usage("--db", str(tmp_path / "none.db"), capsys=capsys)
    assert "no calls recorded" in text


def test_a_bad_period_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        usage("--since", "last tuesday", capsys=capsys)
    assert exit_info.value.code == 2
    assert "not a period" in capsys.readouterr().err
