"""The station's Prometheus metrics, with prometheus_client and one registry per app.

Counters and the latency histogram are updated by :mod:`.edge` and the
inspector; the gauges (in-flight requests, clients, overlay cache, RSS, ...)
are read live at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "ServiceMetrics"]

#: Prometheus text exposition format 0.0.4.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
#: Latency histogram buckets (seconds).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _LiveGauges(Collector):
    """Gauges computed at scrape time; a gauge whose value is None is left out."""

    def __init__(self) -> None:
        self.gauges: list[tuple[str, str, Callable[[], float | None]]] = []

    def add(self, name: str, help_: str, value: Callable[[], float | None]) -> None:
        self.gauges.append((name, help_, value))

    def collect(self) -> Iterator[Metric]:
        for name, help_, value in self.gauges:
            v = value()
            if v is not None:
                yield GaugeMetricFamily(name, help_, value=float(v))


class ServiceMetrics:
    """Counters, the latency histogram and live gauges of one app.

    Metric names are those of the hand-written exporter before it
    (``gaikan_http_requests_total``, ``gaikan_images_inspected_total``, ...);
    docs/service.md lists them all.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter(
            "gaikan_http_requests",
            "HTTP requests by method, path and status.",
            ["method", "path", "status"],
            registry=reg,
        )
        self.errors = Counter(
            "gaikan_http_request_errors",
            "HTTP responses with status >= 400.",
            ["path", "status"],
            registry=reg,
        )
        self.duration = Histogram(
            "gaikan_http_request_duration_seconds",
            "HTTP request latency.",
            ["path"],
            buckets=BUCKETS,
            registry=reg,
        )
        self.images = Counter("gaikan_images_inspected", "Images scored.", registry=reg)
        self.image_errors = Counter(
            "gaikan_image_errors", "Uploaded files rejected with a per-file error.", registry=reg
        )
        self.defects = Counter("gaikan_defects_found", "Images judged 'defect'.", registry=reg)
        self.internal_errors = Counter(
            "gaikan_internal_errors", "Bugs caught by the catch-all handler.", registry=reg
        )
        self.live = _LiveGauges()
        reg.register(self.live)
        ProcessCollector(registry=reg)  # process_resident_memory_bytes and friends

    def gauge(self, name: str, help_: str, value: Callable[[], float | None]) -> None:
        """Export ``value()`` as a gauge at every scrape (left out while it is None)."""
        self.live.add(name, help_, value)

    def observe_request(self, method: str, path: str, status: int, seconds: float) -> None:
        """Count one answered request (``path`` is a bounded route label)."""
        self.requests.labels(method, path, str(status)).inc()
        if status >= 400:
            self.errors.labels(path, str(status)).inc()
        self.duration.labels(path).observe(seconds)

    def add(
        self, images: int = 0, image_errors: int = 0, defects: int = 0, internal_errors: int = 0
    ) -> None:
        """Add to the image and error counters."""
        for counter, n in (
            (self.images, images),
            (self.image_errors, image_errors),
            (self.defects, defects),
            (self.internal_errors, internal_errors),
        ):
            if n:
                counter.inc(n)

    def render(self) -> bytes:
        """The registry in Prometheus text format 0.0.4."""
        return generate_latest(self.registry)
