"""Prometheus metrics for one app: what it served, where, how fast, and what failed.

Each :class:`Metrics` owns its own ``CollectorRegistry`` (never prometheus-client's global one),
so two apps in one process count apart. The app calls the small ``observe_*`` methods; the
:class:`MetricsEndpoint` serves the text format. Gating (loopback peer, client keys) is done by
the app's gates around the endpoint, not here.

Model names come from clients, so a label takes at most :data:`MAX_MODEL_LABELS` distinct model
names; later new names are counted as ``other`` and cannot grow the registry without bound.

Every request and model call is counted, eight samples for a model call: the series are plain
numbers in dictionaries, counted on the app's event loop thread (where ``/metrics`` is answered
too), and turned into prometheus-client's metric families only when scraped. prometheus-client's
own ``Counter`` and ``Histogram`` take a lock for every sample, which cost more than the rest of
the bookkeeping of a call.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
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


class _Counter:
    """A counter's labelled series."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in list(self.values.items()):
            family.add_metric(list(labels), value)
        return family


class _Histogram:
    """A histogram's labelled series: a count per bucket (the last one above every bound) and
    the sum of what was observed."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.bounds = tuple(buckets)
        self.bucket_names = [str(float(bound)) for bound in self.bounds]  # "0.5", "10.0": as Go writes them
        self.counts: dict[tuple[str, ...], list[int]] = {}
        self.sums: dict[tuple[str, ...], float] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        counts = self.counts.get(labels)
        if counts is None:
            counts = self.counts[labels] = [0] * (len(self.bounds) + 1)
        counts[bisect.bisect_left(self.bounds, value)] += 1  # a bucket counts values <= its bound
        self.sums[labels] = self.sums.get(labels, 0.0) + value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, counts in list(self.counts.items()):
            cumulative = list(itertools.accumulate(counts))
            buckets = list(zip([*self.bucket_names, "+Inf"], cumulative, strict=True))
            family.add_metric(list(labels), buckets, self.sums[labels])
        return family


class _Families(Collector):
    def __init__(self, metrics: Sequence[_Counter | _Histogram]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for metric in self.metrics:
            yield metric.family()


class Metrics:
    def __init__(self) -> None:
        self.requests = _Counter(
            "ampbridge_requests",
            "HTTP requests and WebSocket sessions, by route kind and status.",
            ["route_kind", "status"],
        )
        self.model_calls = _Counter(
            "ampbridge_model_calls",
            "Model calls by routing decision, provider, model and status (0: no reply started).",
            ["decision", "provider", "model", "status"],
        )
        token_labels = ["decision", "model"]
        self.input_tokens = _Counter(
            "ampbridge_input_tokens", "Prompt tokens read from replies, cached ones included.", token_labels
        )
        self.output_tokens = _Counter(
            "ampbridge_output_tokens", "Output tokens read from replies, reasoning included.", token_labels
        )
        self.cache_read_tokens = _Counter(
            "ampbridge_cache_read_tokens",
            "Prompt tokens served from a prompt cache (part of the input tokens).",
            token_labels,
        )
        self.cache_creation_tokens = _Counter(
            "ampbridge_cache_creation_tokens",
            "Prompt tokens written to a prompt cache (part of the input tokens).",
            token_labels,
        )
        self.duration = _Histogram(
            "ampbridge_model_call_duration_seconds",
            "Model call time from the request to the reply's end.",
            ["decision"],
            DURATION_BUCKETS,
        )
        self.ttfb = _Histogram(
            "ampbridge_model_call_ttfb_seconds",
            "Model call time from the request to the reply's first body bytes.",
            ["decision"],
            TTFB_BUCKETS,
        )
        self.upstream_errors = _Counter(
            "ampbridge_upstream_errors",
            "Failures talking to the Amp upstream, by kind (connect, timeout, read, status_5xx, ...).",
            ["kind"],
        )
        self.backend_errors = _Counter(
            "ampbridge_backend_errors",
            "Failures talking to a local backend, by backend name and kind.",
            ["backend", "kind"],
        )
        self.reloads = _Counter(
            "ampbridge_config_reloads", "Configuration reloads, by result (ok, failed).", ["result"]
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(
            _Families(
                [
                    self.requests,
                    self.model_calls,
                    self.input_tokens,
                    self.output_tokens,
                    self.cache_read_tokens,
                    self.cache_creation_tokens,
                    self.duration,
                    self.ttfb,
                    self.upstream_errors,
                    self.backend_errors,
                    self.reloads,
                ]
            )
        )
        self._models: set[str] = set()

    def _model_label(self, model: str) -> str:
        if model in self._models:
            return model
        if len(self._models) >= MAX_MODEL_LABELS:
            return OTHER_MODEL
        self._models.add(model)
        return model

    def observe_request(self, route_kind: str, status: int) -> None:
        """Every HTTP request or WebSocket session, when it ends (route kind: model, control, ...)."""
        self.requests.inc((route_kind, str(status)))

    def observe_call(self, *, decision: str, provider: str, model: str, outcome: ReplyOutcome) -> None:
        """One model call, when its reply ends (``UsageWatchingSend``'s ``on_finish``)."""
        decision, model = str(decision), self._model_label(model)
        self.model_calls.inc((decision, provider, model, str(outcome.status)))
        if outcome.usage is not None:
            usage, labels = outcome.usage, (decision, model)
            self.input_tokens.inc(labels, usage.input_tokens)
            self.output_tokens.inc(labels, usage.output_tokens)
            self.cache_read_tokens.inc(labels, usage.cache_read_tokens)
            self.cache_creation_tokens.inc(labels, usage.cache_creation_tokens)
        self.duration.observe((decision,), outcome.duration)
        if outcome.ttfb is not None:
            self.ttfb.observe((decision,), outcome.ttfb)

    def upstream_error(self, kind: str) -> None:
        self.upstream_errors.inc((kind,))

    def backend_error(self, name: str, kind: str) -> None:
        self.backend_errors.inc((name, kind))

    def reload(self, ok: bool) -> None:
        self.reloads.inc(("ok" if ok else "failed",))

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
