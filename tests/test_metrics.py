"""``/metrics``: Prometheus text that a scraper parses, counters that move by what was served,
and one registry per app."""

from __future__ import annotations

import anyio
import httpx
from prometheus_client.parser import text_string_to_metric_families

from ampbridge.accounting import ReplyOutcome, TokenUsage
from ampbridge.metrics import MAX_MODEL_LABELS, Metrics, MetricsEndpoint


def scrape(metrics: Metrics, method: str = "GET") -> httpx.Response:
    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=MetricsEndpoint(metrics))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.request(method, "/metrics")

    return anyio.run(get)


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = scrape(metrics)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def outcome(
    *, status: int = 200, tokens: tuple[int, int, int, int] | None = (100, 20, 60, 5), duration: float = 0.3
) -> ReplyOutcome:
    usage = None if tokens is None else TokenUsage(*tokens)
    return ReplyOutcome(status=status, usage=usage, ttfb=0.04, duration=duration, completed=True)


def test_model_calls_move_calls_tokens_and_latency_by_what_was_served() -> None:
    metrics = Metrics()
    before = samples(metrics)
    metrics.observe_call(decision="LOCAL", provider="anthropic", model="claude-opus-4-7", outcome=outcome())
    metrics.observe_call(
        decision="LOCAL", provider="anthropic", model="claude-opus-4-7", outcome=outcome(duration=7.0)
    )
    metrics.observe_call(
        decision="AMP_CREDITS", provider="openai", model="gpt-5", outcome=outcome(status=502, tokens=None)
    )
    after = samples(metrics)
    local = {"decision": "LOCAL", "model": "claude-opus-4-7"}
    call = {**local, "provider": "anthropic", "status": "200"}
    assert value(before, "ampbridge_model_calls_total", **call) == 0
    assert value(after, "ampbridge_model_calls_total", **call) == 2
    assert (
        value(
            after,
            "ampbridge_model_calls_total",
            decision="AMP_CREDITS",
            provider="openai",
            model="gpt-5",
            status="502",
        )
        == 1
    )
    assert value(after, "ampbridge_input_tokens_total", **local) == 200
    assert value(after, "ampbridge_output_tokens_total", **local) == 40
    assert value(after, "ampbridge_cache_read_tokens_total", **local) == 120
    assert value(after, "ampbridge_cache_creation_tokens_total", **local) == 10
    assert value(after, "ampbridge_input_tokens_total", decision="AMP_CREDITS", model="gpt-5") == 0
    assert value(after, "ampbridge_model_call_duration_seconds_count", decision="LOCAL") == 2
    assert value(after, "ampbridge_model_call_duration_seconds_sum", decision="LOCAL") == 7.3
    assert value(after, "ampbridge_model_call_duration_seconds_bucket", decision="LOCAL", le="0.5") == 1
    assert value(after, "ampbridge_model_call_duration_seconds_bucket", decision="LOCAL", le="10.0") == 2
    assert value(after, "ampbridge_model_call_ttfb_seconds_count", decision="AMP_CREDITS") == 1


def test_requests_errors_and_reloads_are_counted() -> None:
    metrics = Metrics()
    for status in (200, 200, 404):
        metrics.observe_request("control", status)
    metrics.observe_request("model", 200)
    metrics.upstream_error("connect")
    metrics.upstream_error("connect")
    metrics.backend_error("ollama", "timeout")
    metrics.reload(True)
    metrics.reload(False)
    metrics.reload(False)
    found = samples(metrics)
    assert value(found, "ampbridge_requests_total", route_kind="control", status="200") == 2
    assert value(found, "ampbridge_requests_total", route_kind="control", status="404") == 1
    assert value(found, "ampbridge_requests_total", route_kind="model", status="200") == 1
    assert value(found, "ampbridge_upstream_errors_total", kind="connect") == 2
    assert value(found, "ampbridge_backend_errors_total", backend="ollama", kind="timeout") == 1
    assert value(found, "ampbridge_config_reloads_total", result="ok") == 1
    assert value(found, "ampbridge_config_reloads_total", result="failed") == 2


def test_two_apps_in_one_process_count_apart() -> None:
    first, second = Metrics(), Metrics()
    first.reload(True)
    assert value(samples(first), "ampbridge_config_reloads_total", result="ok") == 1
    assert value(samples(second), "ampbridge_config_reloads_total", result="ok") == 0


def test_client_chosen_model_names_cannot_grow_the_registry_without_bound() -> None:
    metrics = Metrics()
    for number in range(MAX_MODEL_LABELS + 50):
        metrics.observe_call(
            decision="NO_PROVIDER", provider="openai", model=f"m-{number}", outcome=outcome()
        )
    found = samples(metrics)
    models = {dict(labels)["model"] for (name, labels) in found if name == "ampbridge_model_calls_total"}
    assert len(models) == MAX_MODEL_LABELS + 1
    assert (
        value(
            found,
            "ampbridge_model_calls_total",
            decision="NO_PROVIDER",
            provider="openai",
            model="other",
            status="200",
        )
        == 50
    )


def test_head_answers_without_a_body_and_other_methods_are_refused() -> None:
    metrics = Metrics()
    head = scrape(metrics, "HEAD")
    assert head.status_code == 200 and head.content == b""
    post = scrape(metrics, "POST")
    assert post.status_code == 405
    assert post.json()["error"] == "method_not_allowed"
