"""Merging the /metrics of several processes into one exposition (gateway/metrics_merge.py)."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics_merge import merged_exposition


@contextlib.contextmanager
def _serving(body: bytes) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def process(received: dict[str, int], depth: float, batches: list[float]) -> bytes:
    """One process's exposition: a labelled counter, a gauge, a histogram and an unlabelled counter."""
    registry = CollectorRegistry()
    counter = Counter("sg_messages_received_total", "Messages", ["lane"], registry=registry)
    for lane, n in received.items():
        counter.labels(lane).inc(n)
    Gauge("sg_ingest_queue_depth", "Depth", registry=registry).set(depth)
    histogram = Histogram("sg_batch_seconds", "Batch", buckets=(0.1, 1.0), registry=registry)
    for seconds in batches:
        histogram.observe(seconds)
    Counter("sg_messages_duplicate_total", "Repeats", registry=registry).inc(len(batches))
    return generate_latest(registry)


def samples(text: bytes | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = text.decode() if isinstance(text, bytes) else text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples
            if not s.name.endswith("_created")}


def merged_with(own: bytes, other: bytes) -> bytes:
    """``merged_exposition`` of ``own`` and ``other`` served over HTTP, as serve's alarm lane serves it."""
    with _serving(other) as url:
        return merged_exposition(own, [url])


def test_equal_samples_add_up_and_the_others_are_kept() -> None:
    routine = process({"routine": 7}, 3, [0.05, 0.5])
    alarm = process({"alarm": 5}, 1, [2.0])
    got = samples(merged_with(routine, alarm))
    assert got[("sg_messages_received_total", (("lane", "routine"),))] == 7
    assert got[("sg_messages_received_total", (("lane", "alarm"),))] == 5
    assert got[("sg_messages_duplicate_total", ())] == 3
    assert got[("sg_ingest_queue_depth", ())] == 4
    assert got[("sg_batch_seconds_count", ())] == 3
    assert got[("sg_batch_seconds_bucket", (("le", "0.1"),))] == 1
    assert got[("sg_batch_seconds_bucket", (("le", "1.0"),))] == 2
    assert got[("sg_batch_seconds_bucket", (("le", "+Inf"),))] == 3


def test_a_process_that_does_not_answer_is_left_out_and_counted() -> None:
    url = "http://127.0.0.1:9/metrics"  # the discard port: nothing listens there
    failures = REGISTRY.get_sample_value("sg_metrics_merge_failures_total", {"url": url}) or 0.0
    merged = merged_exposition(process({"routine": 2}, 0, []), [url])
    assert samples(merged)[("sg_messages_received_total", (("lane", "routine"),))] == 2
    assert REGISTRY.get_sample_value("sg_metrics_merge_failures_total", {"url": url}) == failures + 1
