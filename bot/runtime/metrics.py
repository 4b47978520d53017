"""Prometheus metrics of the gateway and worker (no labels that identify a learner).

The gateway serves them at `/metrics`, the worker on `WORKER_METRICS_PORT`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

WEBHOOK = Histogram(
    "sanad_webhook_seconds", "Time to answer a provider webhook", ["channel", "status"], buckets=LATENCY_BUCKETS_S
)
INBOUND = Counter("sanad_inbound_messages_total", "Inbound messages by outcome", ["channel", "outcome"])
IGNORED = Counter("sanad_ignored_updates_total", "Webhook deliveries answered 200 and ignored", ["channel"])
REJECTED = Counter("sanad_rejected_requests_total", "Webhook requests rejected", ["channel", "status"])
PROCESSED = Histogram(
    "sanad_processing_seconds", "From taking a message to queuing its replies", ["channel", "route"],
    buckets=LATENCY_BUCKETS_S,
)
RASA_LATENCY = Histogram("sanad_rasa_seconds", "Rasa REST round trip", buckets=LATENCY_BUCKETS_S)
RASA_ERRORS = Counter("sanad_rasa_errors_total", "Rasa calls that failed")
OUTBOUND = Counter("sanad_outbound_messages_total", "Outbound sends by result", ["channel", "result"])
WORKER_JOBS = Counter("sanad_worker_jobs_total", "Worker job runs by outcome", ["job", "outcome"])
WORKER_JOB_SECONDS = Histogram("sanad_worker_job_seconds", "Duration of a worker job's run", ["job"],
                               buckets=(*LATENCY_BUCKETS_S, 30.0, 60.0, 300.0))
WORKER_HEARTBEAT = Gauge("sanad_worker_heartbeat_timestamp_seconds", "When the worker last wrote its heartbeat")
