"""One /metrics for a command that runs as several processes (``safeguard serve`` and its alarm lane).

Each process keeps its own Prometheus registry; the API's /metrics adds the others' expositions
(``api.metrics_merge``: their /metrics URLs, fetched with a short timeout) to its own, family by
family: the same sample (name and labels) in two processes is summed, so a counter counts both
lanes' messages and ``process_resident_memory_bytes`` is the command's memory. Samples that do not
add up are taken from this process alone (start time, open file limits). A process that does not
answer is left out, and ``sg_metrics_merge_failures_total`` counts it: /metrics never fails for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 1.0
MERGE_FAILURES = Counter("sg_metrics_merge_failures_total", "Other processes' /metrics not merged (no answer)",
                         ["url"])
# Per-process facts, not amounts: summing them over processes means nothing.
_OWN_ONLY = frozenset({"process_start_time_seconds", "process_max_fds", "process_virtual_memory_max_bytes",
                       "python_info"})

_SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def merged_exposition(own: bytes, others: Sequence[str]) -> bytes:
    """``own`` (this process's exposition) with the expositions of ``others`` added, as one."""
    texts = [own.decode()]
    for url in others:
        try:
            response = httpx.get(url, timeout=FETCH_TIMEOUT_S)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            MERGE_FAILURES.labels(url).inc()
            log.warning("metrics of %s not merged: %s", url, exc)
            continue
        texts.append(response.text)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(merge_families(text_string_to_metric_families(t) for t in texts)))
    return generate_latest(registry)


def merge_families(expositions: Iterable[Iterable[Metric]]) -> list[Metric]:
    """The families of several expositions, the first one's order first; equal samples summed."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[_SampleKey, Sample]] = {}
    for index, exposition in enumerate(expositions):
        for family in exposition:
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                values[family.name] = {}
            samples = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                before = samples.get(key)
                if before is None:
                    samples[key] = sample
                elif index > 0 and not _own_only(sample.name):
                    samples[key] = before._replace(value=before.value + sample.value)
    for name, family in families.items():
        family.samples = list(values[name].values())
    return list(families.values())


def _own_only(sample_name: str) -> bool:
    return sample_name in _OWN_ONLY or sample_name.endswith("_created")


class _Merged(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def exposition(merge: Sequence[str]) -> tuple[bytes, str]:
    """This process's /metrics body and content type, with ``merge``'s processes added when given."""
    own = generate_latest(REGISTRY)
    return (merged_exposition(own, merge) if merge else own), CONTENT_TYPE_LATEST
