"""The gateway's one validated settings tree (issue 14).

One section per concern; in YAML, a mapping per section (``docs/operations.md``, "Configure"):

* ``mqtt``: the broker connection (``url``, ``version``, ``client_id``, ``shared_group``,
  ``session_expiry_s``, TLS files);
* ``broker``: what ``safeguard broker-config`` writes for the broker (dispatch account, reserved ids);
* ``database``: ``url``, ``pool_timeout_s``, and how long rows are kept (``*_retention_days``);
* ``api``: the HTTP server (``host``, ``port``, ``bootstrap_token``, ``db_timeout_s``), its live push
  (``sse_*``) and ``metrics_port`` (``/metrics`` of a process without the API);
* ``liveness``: when a device or agent counts as silent, failing or skewed, and the supervisor's
  sweep of those and of escalation (``missed_heartbeats``, ``default_heartbeat_s``,
  ``battery_low_pct``, ``future_ts_tolerance_s``, ``escalate_after_s``, ``sweep_interval_s``) —
  the :class:`~gateway.ingest.batch.Rules` the batch applies and the
  :class:`~gateway.rules.engine.Heartbeats` of the compliance figures and sweeps, passed whole;
* ``ingest``: lanes, batching, back-pressure, the agents' confirmations, provisional alerts;
* ``compliance``: the :class:`~gateway.compliance.verdicts.Thresholds` (passed whole) and the daily
  timeline's pace;
* ``problems``: the problem list's deadlines and sweeps;
* ``notify``: the notifier (:class:`~gateway.notify.config.NotifyConfig`), as before;
* ``timezone`` (top level): local midnight for the days and months of compliance, detector tests
  and messages.

Every setting also keeps its flat name from before the sections (:data:`FLAT_NAMES`):
``database_url`` is ``database.url``, ``missed_heartbeats`` is ``liveness.missed_heartbeats``.
The flat name works as a constructor keyword, a YAML key and, with the prefix, an environment
variable (``SAFEGUARD_DATABASE_URL``, the names of DESIGN section 7); the nested one as a keyword
or key (``database={"url": ...}``) and as ``SAFEGUARD_DATABASE__URL``. Each source is nested on
its own before the sources are merged, so the order holds whatever the spelling. Sources, highest
first: constructor arguments (``load_settings``' overrides), ``SAFEGUARD_*`` environment
variables (the nested spelling over the flat one), the YAML file, the defaults. One source giving
a setting both ways is refused, naming the flat key. Code spells keywords flat
(``Settings(database_url=...)``, ``settings.updated(escalate_after_s=0.5)``) and reads them
nested (``settings.database.url``); files and docs show the sections.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, create_model, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway.compliance.verdicts import Thresholds
from gateway.ingest.batch import Rules
from gateway.notify.config import NotifyConfig
from gateway.store import RETENTION_DAYS
from protocol.configfile import ConfigFileError, at, key_of, read_yaml
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


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(_Section):
    url: str = "mqtt://127.0.0.1:1883"
    version: MqttVersion = MqttVersion.V5
    client_id: str = "safeguard-gateway"
    # Several ingest processes share the stream through an MQTT 5 shared subscription
    # ($share/GROUP/sg/v1/#); unset for one process or a broker without shared subscriptions.
    shared_group: str | None = None
    session_expiry_s: int = Field(86_400, ge=0)
    ca_file: str | None = None  # mqtts with a private CA
    # mqtts with a client certificate (optional; the broker may require one): PEM files.
    cert_file: str | None = None
    key_file: str | None = None

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        MqttEndpoint.parse(value)
        return value

    @property
    def endpoint(self) -> MqttEndpoint:
        """The broker to connect to: the URL with the TLS files."""
        return dataclasses.replace(MqttEndpoint.parse(self.url), ca_file=self.ca_file, cert_file=self.cert_file,
                                   key_file=self.key_file)


class BrokerSettings(_Section):
    """Broker identity (`safeguard broker-config`, docs/operations.md "Broker configuration").

    The dispatch system's account on the external listener (no password: no account), and site ids
    refused at registration besides the service accounts and the gateway's client ids.
    """

    dispatch_user: str = Field("dispatch", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    dispatch_password: SecretStr | None = None
    reserved_site_ids: frozenset[str] = frozenset()

    @field_validator("dispatch_password")
    @classmethod
    def _no_empty_password(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value and value.get_secret_value() else None  # unset in .env: no dispatch account


class DatabaseSettings(_Section):
    url: str = "postgresql://localhost/safeguard"
    # The database away (issue 15): a role waits this long for a pooled connection before its attempt
    # fails (ingest retries; an alarm it cannot store is pushed as a provisional alert meanwhile).
    pool_timeout_s: float = Field(2.0, gt=0, le=60)
    readings_retention_days: int = Field(RETENTION_DAYS, ge=1)
    dead_letter_retention_days: int = Field(RETENTION_DAYS, ge=1)

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql://")
        return value


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    bootstrap_token: SecretStr | None = None
    # The database away (issue 15): an API request waits this long before it answers 503 with
    # Retry-After (docs/api.md).
    db_timeout_s: float = Field(0.8, gt=0, le=30)
    # SSE (docs/api.md, "Live push"): changes queued for one stream before a stream that does not read
    # is ended (its client resumes with Last-Event-ID); resumes replaying from the database at once.
    sse_client_queue: int = Field(1000, ge=1, le=100_000)
    sse_replay_concurrency: int = Field(2, ge=1, le=64)
    # /metrics for processes without the API (`safeguard ingest`, `supervise`); unset: none.
    metrics_port: int | None = Field(None, ge=1, le=65535)
    # Other processes' /metrics URLs added to this API's /metrics (`safeguard serve` sets its alarm
    # lane's; gateway/metrics_merge.py).
    metrics_merge: list[str] = []


class LivenessSettings(Rules):
    """The batch's :class:`Rules`, and the supervisor's sweep of silence and escalation (DESIGN section 4)."""

    escalate_after_s: float = Field(60.0, gt=0)
    sweep_interval_s: float = Field(2.0, gt=0)


class IngestSettings(_Section):
    # Batching (routine lane: camera heartbeats): a batch is written when it is this big or this
    # old. The alarm lane (smoke, exit, agent status) writes small batches at once.
    batch_size: int = Field(1000, ge=1, le=60_000)
    batch_interval_s: float = Field(0.1, gt=0, le=10)
    alarm_batch_size: int = Field(500, ge=1, le=60_000)
    alarm_batch_interval_s: float = Field(0.02, gt=0, le=10)
    # This ingest worker's stable name, distinct per process (several on one host or across hosts
    # share mqtt.shared_group): its MQTT sessions are named after it, so a restarted worker
    # resumes them. Unset: the host name when a shared group is set.
    worker_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # The routine lane subscribes to sg/v1/# so that any off-contract topic is dead-lettered; that
    # delivers every safety message to it a second time (acknowledged unread). Off: exact filters,
    # for a broker whose ACL already refuses off-contract topics (`safeguard broker-config` writes one).
    catch_all: bool = True
    # The lanes this ingest process runs (both by default). Each lane in a process of its own
    # (`safeguard ingest --lane alarm`, `--lane routine`) gives the alarm lane its own interpreter:
    # no routine work shares its GIL (docs/operations.md, "Ingest: two lanes").
    lanes: frozenset[Literal["alarm", "routine"]] = frozenset({"alarm", "routine"})
    # Back-pressure (issue 15): messages one lane holds received but not yet stored, at most. When
    # full, the lane stops reading the broker's socket and the broker queues the rest (Mosquitto
    # does not keep to the MQTT 5 Receive Maximum, so this bound is the gateway's own).
    queue_max: int = Field(5000, ge=1, le=1_000_000)
    # The alarm lane, its hand-off full, sets routine readings aside in the database (ingest_overflow)
    # and reads on, so that an alarm never waits behind them at the broker (issue 10). Off: it waits.
    overflow: bool = True
    # After each commit, confirm to every agent what it stored (sg/v1/{site}/agent/ack, issue 15):
    # agents keep each reading until then. Off only for a broker whose ACL refuses these topics.
    agent_ack: bool = True
    # A smoke alarm the database cannot store yet is published at once as a provisional alert.
    provisional_alerts: bool = True

    @field_validator("lanes")
    @classmethod
    def _some_lane(cls, value: frozenset[str]) -> frozenset[str]:
        if not value:
            raise ValueError("at least one of alarm, routine")
        return value


class ComplianceSettings(Thresholds):
    """The :class:`Thresholds` (DESIGN section 5), and the daily compliance's pace (docs/compliance.md)."""

    # The leader extends every camera's timeline this often, up to this far behind now (readings
    # still being committed are caught on a later run).
    timeline_every_s: float = Field(60.0, gt=0)
    settle_s: float = Field(60.0, ge=0)


class ProblemSettings(_Section):
    """The problem list (issue 6, docs/problems.md)."""

    # Rectification deadline per problem kind, in days.
    deadline_days: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_PROBLEM_DEADLINE_DAYS))
    clear_after_s: float = Field(3600.0, ge=0)  # condition clear this long: rectified automatically
    sweep_s: float = Field(60.0, gt=0)  # the leader sweeps the problem list at most this often
    # not_compliant needs a day of heartbeats of every site: evaluated at most this often.
    compliance_every_s: float = Field(3600.0, ge=0)
    camera_offline_after_s: float = Field(86_400.0, ge=0)  # camera_offline alert older: a problem

    @field_validator("deadline_days")
    @classmethod
    def _valid_deadlines(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - set(DEFAULT_PROBLEM_DEADLINE_DAYS))
        if unknown:
            raise ValueError(f"unknown problem kind(s) {unknown}; known: {sorted(DEFAULT_PROBLEM_DEADLINE_DAYS)}")
        if any(days < 0 for days in value.values()):
            raise ValueError("deadlines must be whole days >= 0")
        return {**DEFAULT_PROBLEM_DEADLINE_DAYS, **value}  # a partial mapping overrides the defaults


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAFEGUARD_", env_nested_delimiter="__", extra="forbid",
                                      frozen=True)

    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    liveness: LivenessSettings = Field(default_factory=LivenessSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    compliance: ComplianceSettings = Field(default_factory=ComplianceSettings)
    problems: ProblemSettings = Field(default_factory=ProblemSettings)
    # The notifier (`safeguard notify`, docs/operations.md "Notifications"): channels, routes in
    # escalation steps, quiet hours, maintenance windows. Empty: it has nothing to do.
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    # Months for detector tests (GB 50440: at least twice a month) and the days of the daily
    # compliance figures begin at local midnight here.
    timezone: str = "Asia/Shanghai"

    if TYPE_CHECKING:
        # Keywords by section or by flat name (FLAT_NAMES), validated when called (extra="forbid"):
        # the plugin's signature of the fields alone would refuse the flat names.
        def __init__(self, **values: Any) -> None: ...

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Asia/Shanghai)") from None
        return value

    def updated(self, **changes: Any) -> Settings:
        """A copy with ``changes``, named as the constructor takes them (flat or by section).

        For tests and tools that vary one fixture: ``settings.updated(escalate_after_s=0.5)``. A
        section given as a mapping changes those of its settings and is validated again; given as a
        model, it replaces the section.
        """
        nested, _ = _nest(changes)
        update: dict[str, Any] = {}
        for name, value in nested.items():
            if name not in type(self).model_fields:
                raise TypeError(f"no setting {name!r}")
            current = getattr(self, name)
            if isinstance(current, BaseModel) and isinstance(value, Mapping):
                given = {field: getattr(current, field) for field in current.model_fields_set}
                update[name] = type(current).model_validate({**given, **value})
            else:
                update[name] = value
        return self.model_copy(update=update)

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
        # must not redirect a test's or the demo's own Settings(database_url=...) elsewhere. Each
        # source is nested before the merge, so a flat name in a higher source beats a nested one below.
        file = _file.get() or _File({}, environment=True)
        file_settings = InitSettingsSource(settings_cls, init_kwargs=_nest(file.values)[0])
        if not file.environment:
            return (file_settings,)
        arguments = init_settings.init_kwargs if isinstance(init_settings, InitSettingsSource) else {}
        return (InitSettingsSource(settings_cls, init_kwargs=_nest(arguments)[0]), env_settings,
                _FlatEnvironment(settings_cls), file_settings)


# Every setting's flat name (the settings before issue 14 were one flat list) and its place now:
# accepted as a constructor keyword, a YAML key and a SAFEGUARD_* variable, the same as the place.
FLAT_NAMES: dict[str, tuple[str, ...]] = {
    "mqtt_url": ("mqtt", "url"),
    "mqtt_version": ("mqtt", "version"),
    "mqtt_client_id": ("mqtt", "client_id"),
    "mqtt_shared_group": ("mqtt", "shared_group"),
    "mqtt_session_expiry_s": ("mqtt", "session_expiry_s"),
    "mqtt_ca_file": ("mqtt", "ca_file"),
    "mqtt_cert_file": ("mqtt", "cert_file"),
    "mqtt_key_file": ("mqtt", "key_file"),
    "broker_dispatch_user": ("broker", "dispatch_user"),
    "broker_dispatch_password": ("broker", "dispatch_password"),
    "broker_reserved_site_ids": ("broker", "reserved_site_ids"),
    "database_url": ("database", "url"),
    "db_pool_timeout_s": ("database", "pool_timeout_s"),
    "readings_retention_days": ("database", "readings_retention_days"),
    "dead_letter_retention_days": ("database", "dead_letter_retention_days"),
    "api_host": ("api", "host"),
    "api_port": ("api", "port"),
    "bootstrap_token": ("api", "bootstrap_token"),
    "api_db_timeout_s": ("api", "db_timeout_s"),
    "sse_client_queue": ("api", "sse_client_queue"),
    "sse_replay_concurrency": ("api", "sse_replay_concurrency"),
    "metrics_port": ("api", "metrics_port"),
    "metrics_merge": ("api", "metrics_merge"),
    "missed_heartbeats": ("liveness", "missed_heartbeats"),
    "default_heartbeat_s": ("liveness", "default_heartbeat_s"),
    "battery_low_pct": ("liveness", "battery_low_pct"),
    "future_ts_tolerance_s": ("liveness", "future_ts_tolerance_s"),
    "escalate_after_s": ("liveness", "escalate_after_s"),
    "sweep_interval_s": ("liveness", "sweep_interval_s"),
    "batch_size": ("ingest", "batch_size"),
    "batch_interval_s": ("ingest", "batch_interval_s"),
    "alarm_batch_size": ("ingest", "alarm_batch_size"),
    "alarm_batch_interval_s": ("ingest", "alarm_batch_interval_s"),
    "ingest_worker_id": ("ingest", "worker_id"),
    "ingest_catch_all": ("ingest", "catch_all"),
    "ingest_lanes": ("ingest", "lanes"),
    "ingest_queue_max": ("ingest", "queue_max"),
    "ingest_overflow": ("ingest", "overflow"),
    "agent_ack": ("ingest", "agent_ack"),
    "provisional_alerts": ("ingest", "provisional_alerts"),
    "compliance_online_share": ("compliance", "online_share"),
    "compliance_delay_p50_s": ("compliance", "delay_p50_s"),
    "compliance_timeline_every_s": ("compliance", "timeline_every_s"),
    "compliance_settle_s": ("compliance", "settle_s"),
    "problem_deadline_days": ("problems", "deadline_days"),
    "problem_clear_after_s": ("problems", "clear_after_s"),
    "problem_sweep_s": ("problems", "sweep_s"),
    "problem_compliance_every_s": ("problems", "compliance_every_s"),
    "problem_camera_offline_after_s": ("problems", "camera_offline_after_s"),
    "problem_timezone": ("timezone",),
}

Place = tuple[str, ...]  # a setting's keys in the tree: ("database", "url"), ("timezone",)


def _nest(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[Place, str]]:
    """``values`` with each flat name moved to its place, and the places so given (for errors)."""
    nested = dict(values)
    moved: dict[Place, str] = {}
    for flat, place in FLAT_NAMES.items():
        if flat not in nested:
            continue
        if len(place) == 1:
            if place[0] in nested:
                continue  # given twice: the flat key stays, refused as unknown (_problems names it)
            nested[place[0]] = nested.pop(flat)
        else:
            section, field = place
            target = nested.get(section, {})
            if not isinstance(target, Mapping) or field in target:
                continue  # given twice, or the section as a model: refused alike
            nested[section] = {**target, field: nested.pop(flat)}
        moved[place] = flat
    return nested, moved


def _flat_annotation(place: Place) -> Any:
    section, *field = place
    info = Settings.model_fields[section]
    if field:
        model = info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"{section} is no section")
        info = model.model_fields[field[0]]
    return info.annotation


# The flat SAFEGUARD_* variables as one flat model, so that pydantic-settings reads them as it reads
# any (JSON for lists and mappings, case as configured): never validated itself, only read.
_FlatNames: type[BaseSettings] = create_model(  # type: ignore[call-overload]  # field definitions built here
    "_FlatNames", __base__=BaseSettings,
    **{flat: (_flat_annotation(place), None) for flat, place in FLAT_NAMES.items()},
)


class _FlatEnvironment(EnvSettingsSource):
    """The flat ``SAFEGUARD_*`` variables (``SAFEGUARD_DATABASE_URL``), each moved to its place."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(_FlatNames, env_prefix=str(settings_cls.model_config.get("env_prefix", "")))

    def __call__(self) -> dict[str, Any]:
        return _nest(super().__call__())[0]


def _problems(exc: ValidationError, spelled: Mapping[Place, str]) -> list[tuple[tuple[int | str, ...], str]]:
    """Each error of ``exc`` as (key, message), its key as given: ``spelled`` maps places to flat names."""
    problems = []
    for error in exc.errors(include_url=False):
        loc, message = key_of(error["loc"]), error["msg"]
        if error["type"] == "extra_forbidden" and len(loc) == 1 and loc[0] in FLAT_NAMES:
            message = f"given twice: also as {'.'.join(FLAT_NAMES[str(loc[0])])}"
        else:
            for n in (2, 1):
                place = tuple(str(p) for p in loc[:n])
                if place in spelled:
                    loc = (spelled[place], *loc[n:])
                    break
        problems.append((loc, message))
    return problems


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read ``path`` (YAML) if given, then the environment over it, then ``overrides`` over both.

    Raise ConfigError naming the key.
    """
    values = _read(path)[0] if path is not None else {}
    try:
        with _from_file(values, environment=True):
            return Settings(**overrides)
    except ValidationError as exc:
        # Named as given: flat unless the file or an override gave it nested (a variable: flat, as before).
        spelled = {place: flat for flat, place in FLAT_NAMES.items()}
        for given in (values, overrides):
            nested, moved = _nest(given)
            for place in [p for p in spelled if p not in moved and _holds(nested, p)]:
                del spelled[place]
        where = f"{path}: " if path else ""
        problems = "; ".join(f"{'.'.join(str(p) for p in loc)}: {message}" for loc, message in _problems(exc, spelled))
        raise ConfigError(f"{where}{problems}") from None


def _holds(values: Mapping[str, Any], place: Place) -> bool:
    section, *field = place
    return section in values and (not field or (isinstance(values[section], Mapping) and field[0] in values[section]))


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
        return [at(path, root, loc, message) for loc, message in _problems(exc, _nest(values)[1])]
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
