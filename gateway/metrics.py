"""Prometheus metrics of the gateway (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECEIVED = Counter(
    "sg_messages_received_total",
    "MQTT messages ingest handled, counted when their batch is done (the routine lane's unread alarm-lane"
    " messages are not counted there)",
)
ACCEPTED = Counter(
    "sg_messages_accepted_total", "Messages validated and stored (received = accepted + duplicate + rejected)"
)
DUPLICATES = Counter("sg_messages_duplicate_total", "Readings already stored (same site, device, boot, seq)")
REJECTED = Counter("sg_messages_rejected_total", "Messages sent to the dead-letter store", ["reason"])
BATCH_WRITE = Histogram(
    "sg_batch_write_seconds",
    "Time to write one ingest batch (one transaction)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_SIZE = Histogram("sg_batch_messages", "Messages per ingest batch", buckets=(1, 10, 50, 100, 250, 500, 1000, 5000))
INGEST_LAG = Histogram(
    "sg_ingest_lag_seconds",
    "Delay from the sender's ts to the commit of the reading",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
ALERT_CHANGES = Counter("sg_alert_changes_total", "Alert changes written", ["kind", "action"])
RELAYED = Counter("sg_alerts_relayed_total", "Alert changes published to sg/v1/alerts/{site}")
STORE_ERRORS = Counter("sg_ingest_store_errors_total", "Batches that failed to commit and were retried")
QUEUE_DEPTH = Gauge(
    "sg_ingest_queue_depth", "Messages a lane holds received but not yet stored (at most ingest_queue_max)", ["lane"]
)
QUEUE_DEPTH_MAX = Gauge("sg_ingest_queue_depth_max", "The most sg_ingest_queue_depth has been since start", ["lane"])
BACKPRESSURE = Counter(
    "sg_ingest_backpressure_total", "Times a lane's hand-off was full and it stopped reading from the broker", ["lane"]
)
AGENT_ACKS = Counter(
    "sg_agent_acks_published_total", "Confirmations published to agents on sg/v1/{site}/agent/ack (issue 15)"
)
OVERFLOW = Counter(
    "sg_ingest_overflow_total",
    "Routine readings a lane set aside in ingest_overflow while its hand-off was full, to read on to alarms",
    ["lane"],
)
READER_FIRST = Counter(
    "sg_ingest_reader_first_total",
    "Times a routine writer stepped aside (up to 0.25 s) while the alarm lane's reader was behind the broker",
)
OVERFLOW_PENDING = Gauge(
    "sg_ingest_overflow_pending", "Set-aside readings waiting for their COPY into ingest_overflow", ["lane"]
)
