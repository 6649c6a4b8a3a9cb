"""``safeguard``: the command line of DESIGN section 7."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from gateway.config import ConfigError, Settings, check_settings_file, load_settings
from gateway.shutdown import stop_on_signals, wait_for_signal
from protocol.mqtt import BrokerUnavailable, MqttEndpoint, MqttVersion, negotiate_version
from safeguard import demo_settings

if TYPE_CHECKING:
    from gateway.store.db import Conn


def _settings(args: argparse.Namespace, *, demo: bool = True) -> Settings:
    """``--config`` if given; else, for tools (``demo``), the running demo's settings if there is one."""
    if args.config:
        return load_settings(Path(args.config))
    if demo and (published := demo_settings.running()) is not None:
        sys.stderr.write(f"using the running demo's settings ({published})\n")
        return load_settings(published)
    return load_settings(None)


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.runtime import Gateway  # noqa: PLC0415 - keep `safeguard --help` fast

    roles = {"serve": (True, True, True), "ingest": (True, False, False), "supervise": (False, True, False),
             "api": (False, False, True), "notify": (False, False, False)}[args.command]
    if getattr(args, "workers", 1) > 1:
        return cmd_ingest_workers(args)
    overrides: dict[str, Any] = {"ingest_worker_id": args.worker_id} if getattr(args, "worker_id", None) else {}
    if getattr(args, "lane", None):
        overrides["ingest_lanes"] = {args.lane}
    settings = load_settings(Path(args.config) if args.config else None, **overrides)
    alarm_lane: _Children | None = None
    if args.command == "serve" and not args.one_process and settings.ingest.lanes == {"alarm", "routine"}:
        # The alarm lane in a process of its own: its paho thread never shares an interpreter (a
        # GIL) with routine heartbeats, the supervisor or the API (docs/operations.md, Lanes).
        from safeguard.devservers import free_port  # noqa: PLC0415 - only serve splits a lane off

        metrics_port = free_port()  # the child's /metrics, private, merged into the API's
        settings = settings.updated(ingest_lanes={"routine"},
                                    metrics_merge=[*settings.api.metrics_merge,
                                                   f"http://127.0.0.1:{metrics_port}/metrics"])
        child_env = {**os.environ, "SAFEGUARD_METRICS_PORT": str(metrics_port), "SAFEGUARD_API_HOST": "127.0.0.1"}
        alarm_lane = _Children(_ingest_command(args, "alarm"), child_env, ["alarm lane"])
    notify = True if args.command == "notify" else None if args.command == "serve" else False
    if args.command == "notify" and not settings.notify.routes:
        raise ConfigError("safeguard notify: no notify.routes configured (docs/operations.md, Notifications)")
    gateway = Gateway(settings, ingest=roles[0], supervise=roles[1], api=roles[2], notify=notify)
    gateway.start()
    if gateway.api is not None:
        logging.getLogger("safeguard").info("API on %s", gateway.api_url)
    try:
        wait_for_signal(alarm_lane.restart_the_dead if alarm_lane else _orphaned)
    finally:
        if alarm_lane is not None:
            alarm_lane.stop()
        gateway.stop()
    return 0


# Set by _Children in each child: the pid it must not outlive (a parent killed with SIGKILL cannot
# stop it, and its successor's child would fight it for the same MQTT session ids).
PARENT_PID_ENV = "SAFEGUARD_PARENT_PID"


def _orphaned() -> bool:
    """Whether this process is a child of ours whose parent is gone (it then stops, as on SIGTERM)."""
    parent = os.environ.get(PARENT_PID_ENV)
    if parent is None or os.getppid() == int(parent):
        return False
    logging.getLogger("safeguard").warning("parent process %s is gone; stopping", parent)
    return True


def _ingest_command(args: argparse.Namespace, lane: str | None) -> list[str]:
    """``safeguard ingest`` with this command's log level, settings file and ``lane`` (None: both)."""
    command = [sys.executable, "-m", "safeguard.cli", "--log-level", args.log_level, "ingest"]
    if args.config:
        command += ["--config", args.config]
    if lane:
        command += ["--lane", lane]
    return command


class _Children:
    """Child processes of ours, each restarted under the same name (and environment) when it dies."""

    def __init__(self, command: list[str], env: dict[str, str], names: list[str],
                 envs: list[dict[str, str]] | None = None) -> None:
        self._command = command
        own = {PARENT_PID_ENV: str(os.getpid())}
        self._envs = [{**env, **extra, **own} for extra in (envs or [{} for _ in names])]
        self._names = names
        self._log = logging.getLogger("safeguard")
        self.procs = [self._spawn(i) for i in range(len(names))]
        self._log.info("started %s", ", ".join(f"{n} (pid {p.pid})" for n, p in zip(names, self.procs, strict=True)))

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self._command, env=self._envs[index])  # noqa: S603 - our own interpreter and module

    def restart_the_dead(self) -> None:
        for index, child in enumerate(self.procs):
            if child.poll() is not None:
                self._log.warning("%s (pid %d) exited with %s; restarting it", self._names[index], child.pid,
                                  child.returncode)
                self.procs[index] = self._spawn(index)

    def stop(self, timeout: float = 40.0) -> None:
        """SIGTERM to all (each finishes its batch in hand), then wait; SIGKILL what is still there."""
        for child in self.procs:
            if child.poll() is None:
                child.terminate()
        for child in self.procs:
            try:
                child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._log.warning("pid %d did not stop within %.0fs; killing it", child.pid, timeout)
                child.kill()
                child.wait()


def cmd_ingest_workers(args: argparse.Namespace) -> int:
    """``safeguard ingest --workers N``: N ingest processes on one shared subscription.

    Each child has a stable worker id (host name and index), so a child that dies is restarted
    under the same id and resumes its MQTT sessions: what it had not acknowledged is delivered
    to it again. Stops them all on SIGINT/SIGTERM.
    """
    import socket  # noqa: PLC0415 - only this command needs it

    settings = _settings(args, demo=False)  # validate before starting anything
    env = dict(os.environ)
    env.setdefault("SAFEGUARD_MQTT_SHARED_GROUP", settings.mqtt.shared_group or "gateway")
    base = settings.ingest.worker_id or socket.gethostname()
    ids = [f"{base}-{index}" for index in range(args.workers)]
    workers = _Children(_ingest_command(args, args.lane), env, [f"ingest worker {i}" for i in ids],
                        [{"SAFEGUARD_INGEST_WORKER_ID": i} for i in ids])
    wait_for_signal(workers.restart_the_dead)
    workers.stop()
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """``safeguard check-config FILE``: the gateway's settings file, each mistake with its line."""
    problems = check_settings_file(Path(args.file))
    if problems:
        raise ConfigError("\n".join(problems))  # main says it, exit 2 (as `agent check-config` does)
    sys.stdout.write(f"{args.file}: OK\n")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from gateway.store.db import connect  # noqa: PLC0415 - psycopg only for database commands
    from gateway.store.migrate import migrate  # noqa: PLC0415 - psycopg only for database commands

    settings = _settings(args)
    with connect(settings.database.url) as conn:
        applied = migrate(conn, retention_days=settings.database.readings_retention_days, day_zone=settings.timezone)
        conn.commit()
    sys.stderr.write(f"applied {', '.join(applied)}\n" if applied else "schema up to date\n")
    return 0


def cmd_sites_import(args: argparse.Namespace) -> int:
    from gateway.broker_config import ReservedSiteId, check_site_id  # noqa: PLC0415 - psycopg only for database commands
    from gateway.store.db import connect  # noqa: PLC0415 - psycopg only for database commands
    from gateway.store.sites import read_sites_csv, upsert_sites  # noqa: PLC0415 - psycopg only for database commands

    records = read_sites_csv(Path(args.file))
    settings = _settings(args)
    for record in records:  # before any is written: a refused file registers nothing
        try:
            check_site_id(settings, record.id)
        except ReservedSiteId as exc:
            raise ValueError(f"{args.file}: {exc}") from None
    with connect(settings.database.url) as conn:
        count = upsert_sites(conn, records)
        conn.commit()
    sys.stderr.write(f"registered {count} sites from {args.file}\n")
    return 0


def cmd_sites_delete(args: argparse.Namespace) -> int:
    from gateway.store.db import connect  # noqa: PLC0415 - psycopg only for database commands
    from gateway.store.sites import purge_site  # noqa: PLC0415 - psycopg only for database commands

    if not args.yes:
        raise ValueError(f"this deletes site {args.site!r} and all its history (alerts, readings, problems,"
                         " tokens); give --yes to do it")
    with connect(_settings(args).database.url) as conn:
        deleted = purge_site(conn, args.site)
        if deleted is None:
            raise ValueError(f"site {args.site!r} is not registered")
        conn.commit()
    sys.stderr.write(f"deleted site {args.site}: " + ", ".join(f"{n} {t}" for t, n in sorted(deleted.items())) + "\n")
    return 0


def cmd_sites_broker_secret(args: argparse.Namespace) -> int:
    from gateway.broker_config import check_site_id, issue_site_secret, revoke_site_secret  # noqa: PLC0415 - psycopg only for database commands
    from gateway.store.db import connect  # noqa: PLC0415 - psycopg only for database commands

    settings = _settings(args)
    if not args.revoke:
        check_site_id(settings, args.site)  # registered before the check existed: it would get no account
    with connect(settings.database.url) as conn:
        if args.revoke:
            revoked = revoke_site_secret(conn, args.site)
            conn.commit()
            sys.stderr.write(f"site {args.site}: broker account {'revoked' if revoked else 'did not exist'};"
                             " locked out once broker-config has run and the broker reloaded\n")
            return 0
        secret = issue_site_secret(conn, args.site)
        conn.commit()
    # The secret goes to stdout only, alone on its line, once (never to the log): only its hash is kept.
    sys.stderr.write(f"site {args.site}: new broker secret (username {args.site}); shown once, give it to the"
                     " site's agent (broker url mqtts://SITE:SECRET@host:8883); any old one stops working at the"
                     " next broker-config\n")
    sys.stdout.write(f"{secret}\n")
    return 0


def cmd_broker_config(args: argparse.Namespace) -> int:
    import grp  # noqa: PLC0415 - Unix only, and only for --group

    from gateway import broker_config  # noqa: PLC0415 - psycopg only for database commands

    settings = _settings(args)
    out = Path(args.out)
    group = None
    if args.group:
        group = int(args.group) if args.group.isdigit() else grp.getgrnam(args.group).gr_gid
    reload = broker_config.Reload(pid=args.reload_pid, pid_file=Path(args.reload_pid_file) if args.reload_pid_file
                                  else None, command=args.reload_command)
    if not args.watch:
        generated = broker_config.generate(settings, out, group=group, reload=reload if reload.configured else None)
        sys.stderr.write(f"wrote {out}: {len(generated.sites)} site accounts"
                         f"{f', refused (reserved ids): {list(generated.skipped)}' if generated.skipped else ''}\n")
        return 0
    stop = stop_on_signals()
    broker_config.watch(settings, out, interval_s=args.interval, stop=stop, group=group,
                        reload=reload if reload.configured else None)
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from gateway.auth import Role, create_token  # noqa: PLC0415 - psycopg only for database commands
    from gateway.store.db import connect  # noqa: PLC0415 - psycopg only for database commands

    role = Role(args.role)
    expires_at = _expiry(args.expires) if args.expires else None
    with connect(_settings(args).database.url) as conn:
        token = create_token(conn, role=role, name=args.name, site=args.site, expires_at=expires_at)
    scope = f" for site {args.site}" if args.site else ""
    until = f", valid until {expires_at.isoformat(timespec='seconds')}" if expires_at else ""
    sys.stderr.write(f"created {role} token {args.name!r}{scope}{until}; it is shown once, store it now:\n")
    print(token)
    return 0


def _expiry(text: str) -> datetime:
    """``30d``, ``12h`` (from now) or a day / RFC 3339 time, as ``--expires`` takes them."""
    units = {"d": 86_400, "h": 3_600}
    if text[-1:] in units and text[:-1].isdigit() and int(text[:-1]) > 0:
        return datetime.now(UTC) + timedelta(seconds=int(text[:-1]) * units[text[-1]])
    return _instant(text, ZoneInfo(_DEFAULT_ZONE), end=False)


def cmd_token_list(args: argparse.Namespace) -> int:
    from gateway.auth import list_tokens  # noqa: PLC0415 - psycopg only for database commands
    from gateway.store.db import connect  # noqa: PLC0415 - psycopg only for database commands

    with connect(_settings(args).database.url) as conn:
        rows = list_tokens(conn)
    sys.stdout.write("id\tstatus\trole\tsite\tname\tcreated\texpires\n")
    for r in rows:
        expires = r["expires_at"].isoformat(timespec="seconds") if r["expires_at"] else "-"
        sys.stdout.write(f"{r['id']}\t{r['status']}\t{r['role']}\t{r['site'] or '-'}\t{r['name']}\t"
                         f"{r['created_at'].isoformat(timespec='seconds')}\t{expires}\n")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from gateway.auth import revoke_token  # noqa: PLC0415 - psycopg only for database commands
    from gateway.store.db import connect  # noqa: PLC0415 - psycopg only for database commands

    with connect(_settings(args).database.url) as conn:
        if not revoke_token(conn, args.id):
            raise ValueError(f"no live token {args.id} (see: safeguard token list)")
    sys.stderr.write(f"revoked token {args.id}: refused from its next request on\n")
    return 0


def _mqtt(args: argparse.Namespace) -> tuple[str, MqttVersion]:
    """The broker and its protocol version: as told (option, config, environment), else asked of it."""
    settings = _settings(args)
    url = args.mqtt_url or settings.mqtt.url
    if args.mqtt_version and args.mqtt_version != "auto":
        return url, MqttVersion(args.mqtt_version)
    if args.mqtt_version is None and "version" in settings.mqtt.model_fields_set:
        return url, settings.mqtt.version
    version = negotiate_version(MqttEndpoint.parse(url))
    sys.stderr.write(f"{url} speaks MQTT {version}\n")
    return url, version


def cmd_record(args: argparse.Namespace) -> int:
    from simulators.recording import Recorder  # noqa: PLC0415 - the simulators only for their commands

    url, version = _mqtt(args)
    stop = stop_on_signals()
    path = Path(args.file)
    with path.open("w", encoding="utf-8") as out:
        recorder = Recorder(url, version, out, include_alerts=args.include_alerts)
        try:
            recorder.start()
        except BrokerUnavailable:
            out.close()
            path.unlink()  # no recording that looks like a quiet one
            raise
        started = time.monotonic()
        while not stop.wait(1.0):
            sys.stderr.write(f"\rrecording {url}: {recorder.count} messages")
            sys.stderr.flush()
            if args.duration is not None and time.monotonic() - started >= args.duration:
                break
        recorder.stop()
    sys.stderr.write(f"\nrecorded {recorder.count} messages to {args.file}\n")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from simulators.recording import read_recording, replay  # noqa: PLC0415 - the simulators only for their commands

    next(read_recording(Path(args.file)), None)  # a missing or foreign file is said before the broker is asked
    url, version = _mqtt(args)
    stop = stop_on_signals()
    summary = replay(Path(args.file), url, version, speed=args.speed, progress=sys.stderr, stop=stop)
    sys.stderr.write(
        f"replayed {summary.published} messages to {url} in {summary.duration_s:.1f} s"
        f" (speed x{args.speed:g}); {summary.failed} failed\n"
    )
    return 1 if summary.failed else 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from simulators import registry  # noqa: PLC0415 - the simulators only for their commands
    from simulators.scenario import AlertWatch, ScenarioRunner, fleet, format_table, judge, load_scenario  # noqa: PLC0415 - the simulators only for their commands

    if args.api_url and not args.token:
        raise ValueError("--api-url needs --token (an admin token) to register the sites")
    if args.scenario:
        scenario = load_scenario(Path(args.scenario))
    else:
        scenario = fleet(args.sites, cameras=args.cameras, smoke=args.smoke, exits=args.exits,
                         heartbeat_s=args.heartbeat_s, duration=args.duration, prefix=args.prefix,
                         delay_probability=args.delay_probability, max_delay_s=args.max_delay_s)
    scenario = scenario.scaled(args.speed)
    url, version = _mqtt(args)  # after the inputs are checked: a typo is not a broker problem
    if args.sites_csv:
        count = registry.write_sites_csv(Path(args.sites_csv), scenario.sites)
        sys.stderr.write(f"wrote {count} sites to {args.sites_csv} (register them: safeguard sites import)\n")
    if args.api_url:
        registry.register_via_api(args.api_url, args.token, scenario.sites)
    stop = stop_on_signals()
    runner = ScenarioRunner(scenario, url, version, seed=args.seed)
    watch = AlertWatch({s.id for s in scenario.sites}) if args.check else None
    sys.stderr.write(f"running {scenario.name!r}: {len(scenario.sites)} sites for {scenario.duration:g} s on {url}\n")
    try:
        seen = runner.run(watch, stop)
    finally:
        if args.api_url and not args.keep_sites:  # a scenario's sites must not stay registered for good
            removed = registry.delete_via_api(args.api_url, args.token, [s.id for s in scenario.sites])
            sys.stderr.write(f"deleted the {removed} sites this run registered, with their alerts"
                             " (--keep-sites keeps them)\n")
    agents = runner.agents.values()
    published = sum(a.published for a in agents)
    undelivered = sum(a.refused + a.sent for a in agents) - published
    offline = sum(not a.connected.is_set() for a in agents)
    sys.stderr.write(f"published {published} messages (acknowledged by the broker), {undelivered} not delivered"
                     + (f"; {offline} sites never connected" if offline else "") + "\n")
    if not args.check:
        return 1 if undelivered or offline else 0
    verdicts = judge(scenario, seen)
    print(format_table(scenario, verdicts))
    return 0 if all(v.ok for v in verdicts) else 1


def cmd_inspect_sample(args: argparse.Namespace) -> int:
    from gateway.inspection.registry import sample_from_db  # noqa: PLC0415 - psycopg only for database commands
    from gateway.inspection.sampler import inspection_csv, write_inspection_csv  # noqa: PLC0415 - keep `safeguard --help` fast
    from gateway.store.db import connect  # noqa: PLC0415 - psycopg only for database commands

    with connect(_settings(args).database.url) as conn:
        sample = sample_from_db(conn, level=args.level, city=args.city, seed=args.seed)
    scope = f"city {sample.city}" if sample.city else "the province"
    sys.stderr.write(
        f"sampled {len(sample.sites)} of {sample.institutions} institutions in {scope}"
        f" ({len(sample.covered)} counties covered, {sample.counties_required} required; seed {sample.seed})\n"
    )
    if args.out:
        write_inspection_csv(sample, Path(args.out))
        sys.stderr.write(f"inspection list written to {args.out}\n")
    else:
        sys.stdout.buffer.write(inspection_csv(sample))
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    from edge_agent.config import load_agent_config  # noqa: PLC0415 - the agent's modules only for `agent`

    path = args.config or args.file
    if not path:
        raise ValueError("give the site's config: safeguard agent --config site.yaml")
    config = load_agent_config(Path(path))  # AgentConfigError is a ValueError: main says it, exit 2
    if args.action == "calibrate":
        from edge_agent.calibrate import calibrate  # noqa: PLC0415 - OpenCV only for calibrate

        if not args.exit:
            raise ValueError("calibrate needs --exit EXIT_ID")
        out = calibrate(config, args.exit, Path(args.out))
        sys.stderr.write(f"saved {out}: check the red region covers the exit, then edit its points in {path}\n")
        return 0
    if args.action == "accept-clear":
        # The running agent watches <reference>.accept and takes its current view as clear (issue 11).
        exit_ = next((e for e in config.exits if e.id == args.exit), None)
        if exit_ is None or exit_.reference is None:
            raise ValueError("accept-clear needs --exit EXIT_ID of an exit with a reference picture in the config")
        request = exit_.reference.with_name(exit_.reference.name + ".accept")
        request.touch()
        sys.stderr.write(f"asked the running agent to take exit {exit_.id}'s current view as clear ({request})\n")
        return 0
    if args.action == "check-config":
        _check_regions(config, Path(path), streams=args.cameras)
        sys.stderr.write(f"{path}: ok (site {config.site}: {len(config.cameras)} cameras, {len(config.exits)} exits,"
                         f" {len(config.smoke)} smoke detectors)\n")
        return 0
    from edge_agent.agent import run_agent  # noqa: PLC0415 - OpenCV only for a running agent

    stop = stop_on_signals()
    return run_agent(config, stop)


_DEFAULT_ZONE = "Asia/Shanghai"  # a day typed without a zone, where no setting says otherwise


def _check_regions(config: Any, path: Path, *, streams: bool) -> None:
    """Exit regions against their camera's frame size, where OpenCV (the video extra) is installed."""
    try:
        from edge_agent.calibrate import regions_outside  # noqa: PLC0415 - OpenCV only for this check
    except ImportError:
        sys.stderr.write("note: exit regions not checked against the frame (OpenCV is not installed:"
                         " pip install '.[video]')\n")
        return
    from edge_agent.config import AgentConfigError, located  # noqa: PLC0415 - the agent's modules only for `agent`

    problems = [located(path, loc, message) for loc, message in regions_outside(config, streams=streams)]
    if problems:
        raise AgentConfigError("\n".join(problems))


def _period(args: argparse.Namespace, settings: Settings) -> tuple[datetime, datetime]:
    """``--from``/``--to`` as an interval [start, end); the current month when neither is given.

    Each takes a day (``2026-11-01``, a local day in ``problem_timezone``), a month (``2026-11``)
    or an RFC 3339 time with its zone. ``--to`` with a day or month includes it (the interval ends
    where it ends): ``--from 2026-11-01 --to 2026-11-30`` is all of November.
    """
    zone = ZoneInfo(settings.timezone)
    today = datetime.now(zone).date()
    month = date(today.year, today.month, 1)
    start = _instant(args.start, zone, end=False) if args.start else datetime.combine(month, time_of_day(), zone)
    end = _instant(args.end, zone, end=True) if args.end else datetime.combine(_next_month(month), time_of_day(), zone)
    if start >= end:
        raise ValueError(f"--from ({start.isoformat()}) must be before --to ({end.isoformat()})")
    return start, end


def _instant(text: str, zone: ZoneInfo, *, end: bool) -> datetime:
    option = "--to" if end else "--from"
    try:
        if len(text) == 7:  # a month: YYYY-MM
            first = date.fromisoformat(f"{text}-01")
            return datetime.combine(_next_month(first) if end else first, time_of_day(), zone)
        if len(text) == 10:  # a day: YYYY-MM-DD
            day = date.fromisoformat(text)
            return datetime.combine(day + timedelta(days=1) if end else day, time_of_day(), zone)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option} {text!r}: give a day (2026-11-01), a month (2026-11) or a time with its zone"
                         " (2026-11-01T08:00:00+08:00)") from None
    if value.tzinfo is None:
        raise ValueError(f"{option} {text!r}: give the time's zone, e.g. 2026-11-01T08:00:00+08:00")
    return value


def _days(start: datetime, end: datetime) -> str:
    """The period as people say it: its first and last day (``end`` is excluded)."""
    last = end - timedelta(microseconds=1)
    return f"{start:%Y-%m-%d} ~ {last:%Y-%m-%d}"


def _next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def _check_places(conn: Conn, city: str | None, county: str | None) -> None:
    """An unknown city or county is a mistake to report, not an empty report."""
    from gateway.store.sites import unknown_place  # noqa: PLC0415 - psycopg only for database commands

    problem = unknown_place(conn, city=city, county=county)
    if problem is not None:
        raise ValueError(problem)


def cmd_inspect_compliance(args: argparse.Namespace) -> int:
    """Which institutions fail the real-time interface requirement over a period, and why."""
    from gateway.reports.ledger import ledger_rows  # noqa: PLC0415 - psycopg only for database commands
    from gateway.store.db import connect  # noqa: PLC0415 - psycopg only for database commands

    settings = _settings(args)
    start, end = _period(args, settings)
    with connect(settings.database.url) as conn:
        _check_places(conn, args.city, args.county)
        rows = ledger_rows(conn, start, end, city=args.city, county=args.county, settings=settings)
    failing = [r for r in rows if r.compliant is False]
    out = sys.stdout
    out.write("site\tname\tcity\tcounty\tcompliant\treasons\n")
    for r in failing if args.failing else rows:
        verdict = {True: "yes", False: "NO", None: "-"}[r.compliant]
        out.write(f"{r.site}\t{r.name}\t{r.city}\t{r.county}\t{verdict}\t{'; '.join(r.reasons)}\n")
    sys.stderr.write(f"{len(failing)} of {len(rows)} institutions fail the real-time interface requirement"
                     f" from {start.isoformat()} to {end.isoformat()}\n")
    return 0


def cmd_inspect_report(args: argparse.Namespace) -> int:
    from gateway.reports import ledger as ledger_report  # noqa: PLC0415 - psycopg only for database commands
    from gateway.reports import summary as summary_report  # noqa: PLC0415 - psycopg only for database commands
    from gateway.store.db import connect  # noqa: PLC0415 - psycopg only for database commands

    if args.inspect_command == "summary" and not args.city:
        raise ValueError("the summary is per city: give --city")
    settings = _settings(args)
    start, end = _period(args, settings)
    out = Path(args.out)
    kind = out.suffix.lower().lstrip(".")
    with connect(settings.database.url) as conn:
        _check_places(conn, args.city, getattr(args, "county", None))
        if args.inspect_command == "ledger":
            rows = ledger_report.ledger_rows(conn, start, end, city=args.city, county=args.county, settings=settings)
            writers = {"csv": lambda: ledger_report.ledger_csv(rows),
                       "xlsx": lambda: ledger_report.ledger_xlsx(rows, title=f"工作台账 {_days(start, end)}")}
        else:
            assert args.city is not None  # checked above
            report = summary_report.summary(conn, start, end, city=args.city, settings=settings)
            writers = {"csv": lambda: summary_report.summary_csv(report),
                       "xlsx": lambda: summary_report.summary_xlsx(report),
                       "html": lambda: summary_report.summary_html(report).encode("utf-8")}
    if kind not in writers:
        raise ValueError(f"--out must end in {', '.join('.' + k for k in writers)}")
    out.write_bytes(writers[kind]())
    sys.stderr.write(f"wrote {out}\n")
    return 0


def cmd_clips(args: argparse.Namespace) -> int:
    from simulators.video import main as clips_main  # noqa: PLC0415 - OpenCV only when asked for

    return clips_main(args.args)


def cmd_demo(args: argparse.Namespace) -> int:
    from safeguard.demo import run_demo  # noqa: PLC0415 - FastAPI, uvicorn and amqtt only for the demo

    data_dir = Path(args.data_dir).resolve()
    if args.reset and data_dir.exists():
        if demo_settings.running(data_dir) is not None:
            raise ValueError(f"a demo is running from {data_dir}: stop it (Ctrl-C) before --reset")
        import shutil  # noqa: PLC0415 - only --reset needs it

        shutil.rmtree(data_dir)
        sys.stderr.write(f"removed {data_dir}: the demo starts from scratch\n")
    return run_demo(data_dir, api_port=args.api_port, mqtt_port=args.mqtt_port, feed=not args.no_feed)


_VERSION_HELP = "default: the configured mqtt_version if set, else what the broker speaks (5, then 3.1.1)"


def _add_simulate(sim: argparse.ArgumentParser) -> None:
    what = sim.add_mutually_exclusive_group(required=True)
    what.add_argument("--scenario", help="scenario YAML (see simulators/scenarios/)")
    what.add_argument("--sites", type=int, help="run N healthy virtual sites")
    sim.add_argument("--check", action="store_true", help="verify the scenario's expected alerts; exit 1 on failure")
    sim.add_argument("--cameras", type=int, default=2, help="cameras per virtual site")
    sim.add_argument("--smoke", type=int, default=2, help="smoke detectors per virtual site")
    sim.add_argument("--exits", type=int, default=1, help="exits per virtual site")
    sim.add_argument("--heartbeat-s", type=float, default=60.0, help="heartbeat interval of virtual sites")
    sim.add_argument("--duration", type=float, default=3600.0, help="seconds to run virtual sites")
    sim.add_argument("--prefix", default="sim", help="site ids are PREFIX-0001, PREFIX-0002, ...")
    sim.add_argument("--seed", type=int, default=0, help="random seed (jitter): runs are reproducible")
    sim.add_argument("--speed", type=float, default=1.0, help="speed-up: every time (heartbeats, events) / SPEED")
    sim.add_argument("--delay-probability", type=float, default=0.0,
                     help="virtual sites: share of readings delayed on the network (0..1)")
    sim.add_argument("--max-delay-s", type=float, default=5.0, help="virtual sites: the longest such delay")
    sim.add_argument("--api-url", help="register the sites through this gateway API (with --token)")
    sim.add_argument("--token", help="admin token for --api-url")
    sim.add_argument("--keep-sites", action="store_true",
                     help="keep the sites --api-url registered (default: deleted, with what they recorded, at the end)")
    sim.add_argument("--sites-csv", help="also write the sites to this CSV (for safeguard sites import)")
    sim.add_argument("--mqtt-url", help="broker (default: the configured mqtt_url)")
    sim.add_argument("--mqtt-version", choices=["5", "3.1.1", "auto"], help=_VERSION_HELP)
    sim.set_defaults(func=cmd_simulate)


def _add_agent_and_inspect(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    agent = sub.add_parser("agent", help="run an edge agent (or: agent check-config FILE)")
    agent.add_argument("action", nargs="?", choices=["run", "check-config", "calibrate", "accept-clear"],
                       default="run")
    agent.add_argument("file", nargs="?", help="the site's config (same as --config)")
    agent.add_argument("--config", help="the site's YAML config")
    agent.add_argument("--exit", help="calibrate: the exit whose region to draw; accept-clear: the exit now clear")
    agent.add_argument("--out", default="exit-region.jpg", help="calibrate: where to save the picture")
    agent.add_argument("--cameras", action="store_true",
                       help="check-config: also open live camera streams to check exit regions against their frames")
    agent.set_defaults(func=cmd_agent)
    inspect = sub.add_parser("inspect", help="inspections").add_subparsers(dest="inspect_command", required=True)
    sample = with_config(inspect.add_parser("sample", help="draw a spot-check sample by the plan's rules"))
    sample.add_argument("--level", required=True, choices=["city", "province"])
    sample.add_argument("--city", help="the city (with --level city)")
    sample.add_argument("--seed", type=int, required=True, help="the same seed draws the same sample")
    sample.add_argument("--out", help="write the inspection list CSV here (default: standard output)")
    sample.set_defaults(func=cmd_inspect_sample)
    for name, text in (("compliance", "which institutions fail the real-time interface requirement, and why"),
                       ("ledger", "export the ledger (工作台账) for a period: .csv or .xlsx"),
                       ("summary", "a city's summary report for a period: .html, .csv or .xlsx")):
        report = with_config(inspect.add_parser(name, help=text))
        report.add_argument("--from", dest="start", help="a day (2026-11-01, local), a month (2026-11) or an"
                            " RFC 3339 time; default: the start of this month")
        report.add_argument("--to", dest="end", help="a day or month (included) or an RFC 3339 time (excluded);"
                            " default: the end of this month")
        report.add_argument("--city")
        if name != "summary":
            report.add_argument("--county")
        if name == "compliance":
            report.add_argument("--failing", action="store_true", help="only the institutions that fail")
            report.set_defaults(func=cmd_inspect_compliance)
            continue
        report.add_argument("--out", required=True, help="the file to write; its suffix chooses the format")
        report.set_defaults(func=cmd_inspect_report)


def _add_sites_and_tokens(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> Any:
    sites = sub.add_parser("sites", help="site registry").add_subparsers(dest="sites_command", required=True)
    imp = with_config(sites.add_parser("import", help="register sites from a CSV file"))
    imp.add_argument("file", help="CSV with columns id,name,city,county,category,address,cameras_required")
    imp.set_defaults(func=cmd_sites_import)
    delete = with_config(sites.add_parser("delete", help="delete a site and all its history (test and scenario"
                                                         " sites)"))
    delete.add_argument("site")
    delete.add_argument("--yes", action="store_true", help="yes, delete its alerts, readings and problems too")
    delete.set_defaults(func=cmd_sites_delete)
    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_command", required=True)
    create = with_config(token.add_parser("create", help="print a new API token (alone on the last line)"))
    create.add_argument("--role", required=True, choices=["fire_brigade", "inspector", "institution", "admin"])
    create.add_argument("--site", help="the site of an institution token")
    create.add_argument("--name", required=True, help="who the token is for")
    create.add_argument("--expires", help="30d or 12h from now, or a day (2027-01-01) or RFC 3339 time;"
                        " default: until revoked")
    create.set_defaults(func=cmd_token_create)
    with_config(token.add_parser("list", help="every token's id, status, role, site and holder")).set_defaults(
        func=cmd_token_list)
    revoke = with_config(token.add_parser("revoke", help="revoke a token at once"))
    revoke.add_argument("id", type=int, help="the token's id (safeguard token list)")
    revoke.set_defaults(func=cmd_token_revoke)
    return sites


def _add_broker(sub: Any, sites: Any,
                with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    secret = with_config(sites.add_parser("broker-secret", help="issue a site's broker secret (printed once, alone"
                                          " on stdout), or --revoke its broker account"))
    secret.add_argument("site")
    secret.add_argument("--revoke", action="store_true", help="remove the site's broker account")
    secret.set_defaults(func=cmd_sites_broker_secret)
    broker = with_config(sub.add_parser("broker-config", help="write Mosquitto's password files and ACLs from the"
                                        " site registry (docs/operations.md, Broker configuration)"))
    broker.add_argument("--out", required=True, help="folder for external/internal .passwd and .acl")
    broker.add_argument("--watch", action="store_true", help="keep running: rewrite (and reload) on every change")
    broker.add_argument("--interval", type=float, default=10.0, help="--watch: seconds between registry checks")
    broker.add_argument("--group", help="group (name or gid) of the files, mode 0640: the broker's, which reads them")
    how = broker.add_mutually_exclusive_group()
    how.add_argument("--reload-pid", type=int, help="after writing, SIGHUP this pid (the broker)")
    how.add_argument("--reload-pid-file", help="after writing, SIGHUP the pid in this file (Mosquitto's pid_file)")
    how.add_argument("--reload-command", help="after writing, run this (e.g. 'systemctl reload mosquitto')")
    broker.set_defaults(func=cmd_broker_config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="safeguard", description="Safety Guard fire-safety monitoring gateway")
    parser.add_argument("--log-level", default=os.environ.get("SAFEGUARD_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="YAML settings file (SAFEGUARD_* environment variables override it)")
        return p

    demo = sub.add_parser("demo", help="everything on embedded defaults, simulated sites included")
    demo.add_argument("--data-dir", default=str(demo_settings.DEFAULT_DATA_DIR),
                      help="where the demo keeps its database (the other commands find a demo running from the"
                           " default one)")
    demo.add_argument("--reset", action="store_true", help="delete the demo's data first (alerts, sites, tokens)")
    demo.add_argument("--api-port", type=int, default=8000, help="preferred API port (another if taken)")
    demo.add_argument("--mqtt-port", type=int, default=1883, help="preferred MQTT port (another if taken)")
    demo.add_argument("--no-feed", action="store_true", help="no simulated sites")
    demo.set_defaults(func=cmd_demo)
    for name, text in (("serve", "ingest + supervisor + API (the alarm lane in a child process)"),
                       ("ingest", "MQTT ingest worker"),
                       ("supervise", "leader-elected supervisor"), ("api", "HTTP API"),
                       ("notify", "notifier: alerts to WeCom, DingTalk, webhooks, e-mail, in steps")):
        role = with_config(sub.add_parser(name, help=text))
        role.set_defaults(func=cmd_serve)
        if name == "serve":
            role.add_argument("--one-process", action="store_true",
                              help="run the alarm lane in this process too (by default a child process of its"
                                   " own runs it, restarted if it dies)")
        if name == "ingest":
            role.add_argument("--workers", type=int, default=1,
                              help="run N ingest processes on a shared subscription (default 1)")
            role.add_argument("--worker-id", help="this worker's stable id (default: the host name with a"
                              " shared group); distinct per process")
            role.add_argument("--lane", choices=["alarm", "routine"],
                              help="run only this lane (default: both); one process per lane keeps the alarm"
                                   " lane's interpreter free of routine work")
    with_config(sub.add_parser("migrate", help="create or upgrade the schema")).set_defaults(func=cmd_migrate)
    check = sub.add_parser("check-config", help="check the gateway's YAML settings file (each mistake with its line)")
    check.add_argument("file", help="the settings file (what --config names)")
    check.set_defaults(func=cmd_check_config)
    sites = _add_sites_and_tokens(sub, with_config)
    _add_broker(sub, sites, with_config)
    _add_simulate(with_config(sub.add_parser("simulate", help="virtual sites, or a scripted scenario (--check)")))
    _add_agent_and_inspect(sub, with_config)
    clips = sub.add_parser("clips", help="write the labelled synthetic exit-camera clips (needs the video extra)",
                           add_help=False)
    clips.add_argument("args", nargs=argparse.REMAINDER)
    clips.set_defaults(func=cmd_clips)
    for name, func, text in (("record", cmd_record, "capture live sg/v1 traffic to a JSON-lines file"),
                             ("replay", cmd_replay, "republish a recording with its original timing")):
        p = with_config(sub.add_parser(name, help=text))
        p.add_argument("file")
        p.add_argument("--mqtt-url", help="broker (default: the configured mqtt_url)")
        p.add_argument("--mqtt-version", choices=["5", "3.1.1", "auto"], help=_VERSION_HELP)
        p.set_defaults(func=func)
        if name == "record":
            p.add_argument("--duration", type=float, help="stop after this many seconds (default: Ctrl-C)")
            p.add_argument("--include-alerts", action="store_true", help="also record sg/v1/alerts/#")
        else:
            p.add_argument("--speed", type=float, default=1.0, help="time scale: 10 replays ten times faster")
    return parser


# Modules of an optional extra whose absence the importing code words as an install command.
_EXTRA_MODULES = frozenset({"amqtt"})  # the demo extra (safeguard/demo.py)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["clips"]:  # its own command line (simulators.video), --help included
        return cmd_clips(argparse.Namespace(args=argv[1:]))
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in ("httpx", "amqtt", "transitions"):  # chatty at INFO; their warnings still show
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except (ConfigError, ValueError) as exc:
        sys.stderr.write(f"safeguard: error: {exc}\n")
        return 2
    except ModuleNotFoundError as exc:
        if exc.name not in _EXTRA_MODULES:
            raise
        sys.stderr.write(f"safeguard: error: {exc}\n")  # the message says what to install
        return 2
    except ConnectionError as exc:  # a broker or API that is not there or refuses us
        sys.stderr.write(f"safeguard: error: {exc}\n")
        return 1
    except OSError as exc:  # a file named on the command line that is missing or unreadable
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"safeguard: error: {where}{exc.strerror or exc}\n")
        return 2
    except Exception as exc:
        import psycopg  # noqa: PLC0415 - only to name a database that is not there

        if isinstance(exc, psycopg.OperationalError):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            sys.stderr.write(f"safeguard: error: cannot use the database: {first}\n"
                             "  (--config FILE or SAFEGUARD_DATABASE_URL; a running ./run demo is found by itself)\n")
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
