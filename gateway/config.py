"""The gateway's one validated settings tree.

Sources, highest first: constructor arguments (``load_settings``' overrides), ``SAFEGUARD_*``
environment variables, the YAML file, the defaults (issue 14).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.compliance.timeline import DELAY_P50_S, ONLINE_SHARE
from gateway.notify.config import NotifyConfig
from gateway.rules.engine import BATTERY_LOW_PCT, MISSED_HEARTBEATS
from gateway.store import RETENTION_DAYS
from protocol import DEFAULT_HEARTBEAT_S, FUTURE_TOLERANCE_S
from protocol.configfile import ConfigFileError, read_yaml, validation_problems
from protocol.mqtt import MqttEndpoint, MqttVersion

# Rectification deadlines in days per problem kind (docs/problems.md); settings may override any.
DEFAULT_PROBLEM_DEADLINE_DAYS: dict[str, int] = {
    "exit_blocked": 1,
    "detector_fault": 7,
    "detector_offline": 3,
    "camera_offline": 3,
    "not_compliant": 7,
    "detector_untested": 30,
}


class ConfigError(ValueError):
    """Invalid configuration; the message names the bad key."""


class _File(NamedTuple):
    values: dict[str, Any]
    environment: bool  # False: the file alone, no SAFEGUARD_* variable (check_settings_file)


# The YAML file while ``load_settings`` or ``check_settings_file`` builds Settings from it: a
# source below the environment. A context variable, so a plain ``Settings(...)`` reads no file.
_file: ContextVar[_File | None] = ContextVar("_file", default=None)


@contextmanager
def _from_file(values: dict[str, Any], *, environment: bool) -> Iterator[None]:
    token = _file.set(_File(values, environment))
    try:
        yield
    finally:
        _file.reset(token)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAFEGUARD_", extra="forbid", frozen=True)

    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_version: MqttVersion = MqttVersion.V5
    mqtt_client_id: str = "safeguard-gateway"
    # Several ingest processes share the stream through an MQTT 5 shared subscription
    # ($share/GROUP/sg/v1/#); unset for one process or a broker without shared subscriptions.
    mqtt_shared_group: str | None = None
    mqtt_session_expiry_s: int = Field(86_400, ge=0)
    mqtt_ca_file: str | None = None  # mqtts with a private CA
    # mqtts with a client certificate (optional; the broker may require one): PEM files.
    mqtt_cert_file: str | None = None
    mqtt_key_file: str | None = None
    # Broker identity (`safeguard broker-config`, docs/operations.md "Broker configuration"): the
    # dispatch system's account on the external listener (no password: no account), and site ids
    # refused at registration besides the service accounts and the gateway's client ids.
    broker_dispatch_user: str = Field("dispatch", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    broker_dispatch_password: SecretStr | None = None
    broker_reserved_site_ids: frozenset[str] = frozenset()
    database_url: str = "postgresql://localhost/safeguard"
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=0, le=65535)
    bootstrap_token: SecretStr | None = None
    # /metrics for processes without the API (`safeguard ingest`, `supervise`); unset: none.
    metrics_port: int | None = Field(None, ge=1, le=65535)
    # Liveness (DESIGN section 4): silent for heartbeat_s x missed_heartbeats.
    missed_heartbeats: int = Field(MISSED_HEARTBEATS, ge=1, le=100)
    default_heartbeat_s: int = Field(DEFAULT_HEARTBEAT_S, ge=1)  # GB/T 28181 keep-alive when the agent did not say
    escalate_after_s: float = Field(60.0, gt=0)
    battery_low_pct: float = Field(BATTERY_LOW_PCT, ge=0, le=100)
    # Ingest batching (routine lane: camera heartbeats): a batch is written when it is this big or
    # this old. The alarm lane (smoke, exit, agent status) writes small batches at once.
    batch_size: int = Field(1000, ge=1, le=60_000)
    batch_interval_s: float = Field(0.1, gt=0, le=10)
    alarm_batch_size: int = Field(500, ge=1, le=60_000)
    alarm_batch_interval_s: float = Field(0.02, gt=0, le=10)
    # This ingest worker's stable name, distinct per process (several on one host or across hosts
    # share mqtt_shared_group): its MQTT sessions are named after it, so a restarted worker
    # resumes them. Unset: the host name when a shared group is set.
    ingest_worker_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # The routine lane subscribes to sg/v1/# so that any off-contract topic is dead-lettered; that
    # delivers every safety message to it a second time (acknowledged unread). Off: exact filters,
    # for a broker whose ACL already refuses off-contract topics (`safeguard broker-config` writes one).
    ingest_catch_all: bool = True
    # The lanes this ingest process runs (both by default). Each lane in a process of its own
    # (`safeguard ingest --lane alarm`, `--lane routine`) gives the alarm lane its own interpreter:
    # no routine work shares its GIL (docs/operations.md, "Ingest: two lanes").
    ingest_lanes: frozenset[Literal["alarm", "routine"]] = frozenset({"alarm", "routine"})
    # Back-pressure (issue 15): messages one lane holds received but not yet stored, at most. When
    # full, the lane stops reading the broker's socket and the broker queues the rest (Mosquitto
    # does not keep to the MQTT 5 Receive Maximum, so this bound is the gateway's own).
    ingest_queue_max: int = Field(5000, ge=1, le=1_000_000)
    # The alarm lane, its hand-off full, sets routine readings aside in the database (ingest_overflow)
    # and reads on, so that an alarm never waits behind them at the broker (issue 10). Off: it waits.
    ingest_overflow: bool = True
    # A ts this far ahead of its arrival is refused (future_timestamp); an agent whose clock runs
    # ahead by more than this has a clock_skew alert (docs/wire-contract.md).
    future_ts_tolerance_s: float = Field(FUTURE_TOLERANCE_S, gt=0)
    # After each commit, confirm to every agent what it stored (sg/v1/{site}/agent/ack, issue 15):
    # agents keep each reading until then. Off only for a broker whose ACL refuses these topics.
    agent_ack: bool = True
    sweep_interval_s: float = Field(2.0, gt=0)
    readings_retention_days: int = Field(RETENTION_DAYS, ge=1)
    dead_letter_retention_days: int = Field(RETENTION_DAYS, ge=1)
    # Real-time interface compliance (DESIGN section 5): every camera online at least this share
    # of the period, and its median delay from ts to arrival no more than this.
    compliance_online_share: float = Field(ONLINE_SHARE, ge=0, le=1)
    compliance_delay_p50_s: float = Field(DELAY_P50_S, ge=0)
    # The problem list (issue 6, docs/problems.md): rectification deadline per problem kind, in days.
    problem_deadline_days: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_PROBLEM_DEADLINE_DAYS))
    problem_clear_after_s: float = Field(3600.0, ge=0)  # condition clear this long: rectified automatically
    problem_sweep_s: float = Field(60.0, gt=0)  # the leader sweeps the problem list at most this often
    # not_compliant needs a day of heartbeats of every site: evaluated at most this often.
    problem_compliance_every_s: float = Field(3600.0, ge=0)
    problem_camera_offline_after_s: float = Field(86_400.0, ge=0)  # camera_offline alert older: a problem
    # Months for detector tests (GB 50440: at least twice a month) and the days of the daily
    # compliance figures begin at local midnight here.
    problem_timezone: str = "Asia/Shanghai"
    # Daily compliance (docs/compliance.md): the leader extends every camera's timeline this often,
    # up to this far behind now (readings still being committed are caught on a later run).
    compliance_timeline_every_s: float = Field(60.0, gt=0)
    compliance_settle_s: float = Field(60.0, ge=0)
    # The notifier (`safeguard notify`, docs/operations.md "Notifications"): channels, routes in
    # escalation steps, quiet hours, maintenance windows. Empty: it has nothing to do.
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    # The database away (issue 15): a role waits this long for a pooled connection before its attempt
    # fails (ingest retries; an alarm it cannot store is pushed as a provisional alert meanwhile) ...
    db_pool_timeout_s: float = Field(2.0, gt=0, le=60)
    # ... and an API request this long before it answers 503 with Retry-After (docs/api.md).
    api_db_timeout_s: float = Field(0.8, gt=0, le=30)
    # SSE (docs/api.md, "Live push"): changes queued for one stream before a stream that does not read
    # is ended (its client resumes with Last-Event-ID); resumes replaying from the database at once.
    sse_client_queue: int = Field(1000, ge=1, le=100_000)
    sse_replay_concurrency: int = Field(2, ge=1, le=64)
    # A smoke alarm the database cannot store yet is published at once as a provisional alert.
    provisional_alerts: bool = True

    @field_validator("mqtt_url")
    @classmethod
    def _valid_mqtt_url(cls, value: str) -> str:
        MqttEndpoint.parse(value)
        return value

    @field_validator("broker_dispatch_password")
    @classmethod
    def _no_empty_password(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value and value.get_secret_value() else None  # unset in .env: no dispatch account

    @field_validator("database_url")
    @classmethod
    def _valid_database_url(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql://")
        return value

    @field_validator("problem_deadline_days")
    @classmethod
    def _valid_problem_deadlines(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - set(DEFAULT_PROBLEM_DEADLINE_DAYS))
        if unknown:
            raise ValueError(f"unknown problem kind(s) {unknown}; known: {sorted(DEFAULT_PROBLEM_DEADLINE_DAYS)}")
        if any(days < 0 for days in value.values()):
            raise ValueError("deadlines must be whole days >= 0")
        return {**DEFAULT_PROBLEM_DEADLINE_DAYS, **value}  # a partial mapping overrides the defaults

    @field_validator("ingest_lanes")
    @classmethod
    def _some_lane(cls, value: frozenset[str]) -> frozenset[str]:
        if not value:
            raise ValueError("at least one of alarm, routine")
        return value

    @field_validator("problem_timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Asia/Shanghai)") from None
        return value

    @property
    def mqtt(self) -> MqttEndpoint:
        return dataclasses.replace(MqttEndpoint.parse(self.mqtt_url), ca_file=self.mqtt_ca_file,
                                   cert_file=self.mqtt_cert_file, key_file=self.mqtt_key_file)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Constructor arguments > environment > YAML file (issue 14): an exported SAFEGUARD_DATABASE_URL
        # must not redirect a test's or the demo's own Settings(database_url=...) elsewhere.
        file = _file.get() or _File({}, environment=True)
        file_settings = InitSettingsSource(settings_cls, init_kwargs=file.values)
        return (init_settings, env_settings, file_settings) if file.environment else (file_settings,)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read ``path`` (YAML) if given, then the environment over it, then ``overrides`` over both.

    Raise ConfigError naming the key.
    """
    values = _read(path)[0] if path is not None else {}
    try:
        with _from_file(values, environment=True):
            return Settings(**overrides)
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False))
        raise ConfigError(f"{where}{problems}") from None


def check_settings_file(path: Path) -> list[str]:
    """Every mistake in the settings file ``path``, each as ``FILE:LINE: key: message``; none: it is good.

    Read and validated as ``load_settings`` does, but the file alone: no SAFEGUARD_* variable can
    hide a mistake in it, or add one.
    """
    try:
        values, root = _read(path)
    except ConfigError as exc:
        return [str(exc)]
    try:
        with _from_file(values, environment=False):
            Settings()
    except ValidationError as exc:
        return validation_problems(path, root, exc)
    return []


def _read(path: Path) -> tuple[dict[str, Any], yaml.Node | None]:
    """The settings file's values (an empty file: none) and its YAML node tree, for the lines of errors."""
    try:
        data, root = read_yaml(path)
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from None
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping of settings at the top level")
    return data, root
