"""Prometheus metrics of one app instance (its own registry, so apps do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.orm import Session, sessionmaker

from store import repository

BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class AuditStatusCollector:
    """Audits per status, read from the database at scrape time."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def describe(self):
        return []

    def collect(self):
        family = GaugeMetricFamily("auditor_audits", "Audits in the database by status", labels=["status"])
        with self.sessions() as session:
            for status, count in repository.count_audits_by_status(session).items():
                family.add_metric([status], count)
        yield family


class Metrics:
    """Request counter and latency histogram by route template, plus audits by status."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("auditor_http_requests", "HTTP requests handled",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("auditor_http_request_duration_seconds", "Time to answer an HTTP request",
                                 ["method", "route"], buckets=BUCKETS, registry=self.registry)
        self.registry.register(AuditStatusCollector(sessions))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one answered request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        """The exposition text of every metric."""
        return generate_latest(self.registry)
