"""Prometheus metrics for one app: what it served, where, how fast, and what failed.

Each :class:`Metrics` owns its own ``CollectorRegistry`` (never prometheus-client's global one),
so two apps in one process count apart. The app calls the small ``observe_*`` methods; the
:class:`MetricsEndpoint` serves the text format. Gating (loopback peer, client keys) is done by
the app's gates around the endpoint, not here.

Model names come from clients, so a label takes at most :data:`MAX_MODEL_LABELS` distinct model
names; later new names are counted as ``other`` and cannot grow the registry without bound.

Every request and model call is counted, so each labelled series is looked up once and kept:
prometheus-client's ``labels()`` costs more than the increment it leads to.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .accounting import ReplyOutcome
from .errors import refuse

MAX_MODEL_LABELS = 200
OTHER_MODEL = "other"
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# The classic text format: every scraper reads it, and our metric names need nothing newer.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TTFB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


MetricT = TypeVar("MetricT", Counter, Histogram)


class _Series(Generic[MetricT]):
    """A metric's labelled series, each made by ``labels()`` once and kept (as the registry keeps
    it anyway)."""

    def __init__(self, metric: MetricT) -> None:
        self.metric: MetricT = metric
        self.made: dict[tuple[str, ...], MetricT] = {}

    def __call__(self, *labels: str) -> MetricT:
        series = self.made.get(labels)
        if series is None:
            series = self.made[labels] = self.metric.labels(*labels)
        return series


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "ampbridge_requests",
            "HTTP requests and WebSocket sessions, by route kind and status.",
            ["route_kind", "status"],
            registry=registry,
        )
        self.model_calls = Counter(
            "ampbridge_model_calls",
            "Model calls by routing decision, provider, model and status (0: no reply started).",
            ["decision", "provider", "model", "status"],
            registry=registry,
        )
        token_labels = ["decision", "model"]
        self.input_tokens = Counter(
            "ampbridge_input_tokens",
            "Prompt tokens read from replies, cached ones included.",
            token_labels,
            registry=registry,
        )
        self.output_tokens = Counter(
            "ampbridge_output_tokens",
            "Output tokens read from replies, reasoning included.",
            token_labels,
            registry=registry,
        )
        self.cache_read_tokens = Counter(
            "ampbridge_cache_read_tokens",
            "Prompt tokens served from a prompt cache (part of the input tokens).",
            token_labels,
            registry=registry,
        )
        self.cache_creation_tokens = Counter(
            "ampbridge_cache_creation_tokens",
            "Prompt tokens written to a prompt cache (part of the input tokens).",
            token_labels,
            registry=registry,
        )
        self.duration = Histogram(
            "ampbridge_model_call_duration_seconds",
            "Model call time from the request to the reply's end.",
            ["decision"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.ttfb = Histogram(
            "ampbridge_model_call_ttfb_seconds",
            "Model call time from the request to the reply's first body bytes.",
            ["decision"],
            buckets=TTFB_BUCKETS,
            registry=registry,
        )
        self.upstream_errors = Counter(
            "ampbridge_upstream_errors",
            "Failures talking to the Amp upstream, by kind (connect, timeout, read, status_5xx, ...).",
            ["kind"],
            registry=registry,
        )
        self.backend_errors = Counter(
            "ampbridge_backend_errors",
            "Failures talking to a local backend, by backend name and kind.",
            ["backend", "kind"],
            registry=registry,
        )
        self.reloads = Counter(
            "ampbridge_config_reloads",
            "Configuration reloads, by result (ok, failed).",
            ["result"],
            registry=registry,
        )
        self._models: set[str] = set()
        self._requests = _Series(self.requests)
        self._model_calls = _Series(self.model_calls)
        self._input_tokens = _Series(self.input_tokens)
        self._output_tokens = _Series(self.output_tokens)
        self._cache_read_tokens = _Series(self.cache_read_tokens)
        self._cache_creation_tokens = _Series(self.cache_creation_tokens)
        self._duration = _Series(self.duration)
        self._ttfb = _Series(self.ttfb)

    def _model_label(self, model: str) -> str:
        if model in self._models:
            return model
        if len(self._models) >= MAX_MODEL_LABELS:
            return OTHER_MODEL
        self._models.add(model)
        return model

    def observe_request(self, route_kind: str, status: int) -> None:
        """Every HTTP request or WebSocket session, when it ends (route kind: model, control, ...)."""
        self._requests(route_kind, str(status)).inc()

    def observe_call(self, *, decision: str, provider: str, model: str, outcome: ReplyOutcome) -> None:
        """One model call, when its reply ends (``UsageWatchingSend``'s ``on_finish``)."""
        decision, model = str(decision), self._model_label(model)
        self._model_calls(decision, provider, model, str(outcome.status)).inc()
        if outcome.usage is not None:
            usage = outcome.usage
            self._input_tokens(decision, model).inc(usage.input_tokens)
            self._output_tokens(decision, model).inc(usage.output_tokens)
            self._cache_read_tokens(decision, model).inc(usage.cache_read_tokens)
            self._cache_creation_tokens(decision, model).inc(usage.cache_creation_tokens)
        self._duration(decision).observe(outcome.duration)
        if outcome.ttfb is not None:
            self._ttfb(decision).observe(outcome.ttfb)

    def upstream_error(self, kind: str) -> None:
        self.upstream_errors.labels(kind).inc()

    def backend_error(self, name: str, kind: str) -> None:
        self.backend_errors.labels(name, kind).inc()

    def reload(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "failed").inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)


class MetricsEndpoint:
    """ASGI endpoint: ``GET``/``HEAD`` answer the Prometheus text format, anything else 405."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await refuse(scope, receive, send, 405, "method_not_allowed", "use GET")
            return
        response = Response(
            self.metrics.text(), media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"}
        )
        await response(scope, receive, send)
