"""Load generator: many virtual sites over several processes at a target message rate.

Each process owns a slice of the sites and publishes at QoS 1 with a bounded number of
messages in flight, checking every publish's result (paho refuses silently past its
message-id limit). The report gives the rate actually achieved and how many publishes
failed.

By default every site has ``cameras`` cameras sending heartbeats. A province-shaped plan
(``smoke``/``exits`` > 0) gives each site cameras, smoke detectors and exits and sends
each message from the next device in turn, so nearly every message in a batch is a
different device, as in real traffic (~170,000 devices in a province).
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from protocol import (
    ExitReading,
    ExitState,
    Heartbeat,
    MessageType,
    Reading,
    SmokeReading,
    SmokeState,
    StreamState,
    device_topic,
    encode,
)
from protocol.mqtt import MqttEndpoint, MqttVersion, new_client

MAX_IN_FLIGHT = 1000


@dataclass(frozen=True, slots=True)
class LoadPlan:
    url: str
    messages: int
    sites: int
    cameras: int = 4
    processes: int = 1
    rate: float | None = None  # messages/s over all processes; None: as fast as possible
    version: MqttVersion = MqttVersion.V5
    site_prefix: str = "s"
    smoke: int = 0  # smoke detectors per site (province-shaped feed when > 0)
    exits: int = 0  # exits per site

    @property
    def devices_per_site(self) -> int:
        return self.cameras + self.smoke + self.exits


def province_plan(url: str, messages: int, sites: int = 500, **options: object) -> LoadPlan:
    """10,000 devices over 500 sites by default: 4 cameras, 13 smoke detectors, 3 exits each."""
    return LoadPlan(url, messages, sites, cameras=4, smoke=13, exits=3, **options)  # type: ignore[arg-type]

@dataclass(frozen=True, slots=True)
class LoadReport:
    published: int  # acknowledged by the broker
    failed: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.published / self.seconds if self.seconds > 0 else 0.0


def site_id(plan: LoadPlan, index: int) -> str:
    return f"{plan.site_prefix}{index:04d}"


def _worker(plan: LoadPlan, part: int, results: multiprocessing.Queue[tuple[int, int, float]]) -> None:
    endpoint = MqttEndpoint.parse(plan.url)
    client = new_client(endpoint, f"load-{part}-{uuid.uuid4().hex[:6]}", plan.version)
    client.max_inflight_messages_set(MAX_IN_FLIGHT)
    client.max_queued_messages_set(MAX_IN_FLIGHT)
    client.connect(endpoint.host, endpoint.port, keepalive=30)
    client.loop_start()
    boot = uuid.uuid4().hex[:8]
    share = plan.messages // plan.processes + (part < plan.messages % plan.processes)
    my_sites = [i for i in range(plan.sites) if i % plan.processes == part] or [part % plan.sites]
    interval = plan.processes / plan.rate if plan.rate else 0.0
    published = failed = 0
    pending: list[mqtt.MQTTMessageInfo] = []
    started = time.monotonic()
    for n in range(share):
        if interval:
            delay = started + n * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        site = site_id(plan, my_sites[n % len(my_sites)])
        topic, reading = _message(plan, site, (n // len(my_sites)) % plan.devices_per_site, boot, n)
        info = client.publish(topic, encode(reading), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            failed += 1
            continue
        pending.append(info)
        if len(pending) >= MAX_IN_FLIGHT:
            published, failed = _settle(pending, published, failed)
    published, failed = _settle(pending, published, failed)
    results.put((published, failed, time.monotonic() - started))
    client.disconnect()
    client.loop_stop()


def _message(plan: LoadPlan, site: str, index: int, boot: str, seq: int) -> tuple[str, Reading]:
    """The routine message of device ``index`` of ``site``: cameras, then smoke detectors, then exits."""
    now = time.time()
    if index < plan.cameras:
        topic = device_topic(site, f"cam-{index + 1}", MessageType.HEARTBEAT)
        return topic, Heartbeat(ts=now, boot=boot, seq=seq, stream=StreamState.OK, fps=10.0, last_frame_ts=now)
    index -= plan.cameras
    if index < plan.smoke:
        topic = device_topic(site, f"smoke-{index + 1}", MessageType.SMOKE)
        return topic, SmokeReading(ts=now, boot=boot, seq=seq, state=SmokeState.NORMAL, battery_pct=90.0,
                                   obscuration_pct=0.0)
    topic = device_topic(site, f"exit-{index - plan.smoke + 1}", MessageType.EXIT)
    return topic, ExitReading(ts=now, boot=boot, seq=seq, state=ExitState.CLEAR, blocked_ratio=0.0, blocked_since=None)


def _settle(pending: list[mqtt.MQTTMessageInfo], published: int, failed: int) -> tuple[int, int]:
    for info in pending:
        info.wait_for_publish(timeout=60)
        if info.is_published():
            published += 1
        else:
            failed += 1
    pending.clear()
    return published, failed


def start(plan: LoadPlan) -> tuple[list[multiprocessing.Process], multiprocessing.Queue[tuple[int, int, float]]]:
    """Start the publisher processes; collect their report with :func:`finish`."""
    results: multiprocessing.Queue[tuple[int, int, float]] = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_worker, args=(plan, part, results), name=f"load-{part}")
             for part in range(plan.processes)]
    for proc in procs:
        proc.start()
    return procs, results


def finish(procs: list[multiprocessing.Process], results: multiprocessing.Queue[tuple[int, int, float]]) -> LoadReport:
    parts = [results.get(timeout=900) for _ in procs]
    for proc in procs:
        proc.join()
    return LoadReport(sum(p[0] for p in parts), sum(p[1] for p in parts), max(p[2] for p in parts))


def run(plan: LoadPlan) -> LoadReport:
    return finish(*start(plan))


def main(argv: list[str] | None = None) -> int:
    import argparse  # noqa: PLC0415 - only the command line needs them
    import sys  # noqa: PLC0415 - only the command line needs them

    parser = argparse.ArgumentParser(prog="python -m simulators.load", description=__doc__)
    parser.add_argument("--mqtt-url", required=True)
    parser.add_argument("--mqtt-version", choices=["5", "3.1.1"], default="5")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rate", type=float, help="target messages/s over all processes (default: flat out)")
    parser.add_argument("--site-prefix", default="s", help="site ids are PREFIX0000, PREFIX0001, ...")
    args = parser.parse_args(argv)
    plan = LoadPlan(args.mqtt_url, args.messages, args.sites, args.cameras, args.processes, args.rate,
                    MqttVersion(args.mqtt_version), args.site_prefix)
    report = run(plan)
    target = f" (target {plan.rate:,.0f})" if plan.rate else ""
    sys.stdout.write(f"published {report.published} in {report.seconds:.1f} s: {report.rate:,.0f} msg/s{target};"
                     f" {report.failed} failed\n")
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
