"""Broker identity (issue 15, point 5) against a real Mosquitto started with the files that
``safeguard broker-config`` generates from the site registry, over TLS with a throwaway CA.

Tests that the configuration shipped before issue 15 (one listener, ``pattern`` ACL, any client
id) also fails are run against it too, as strict expected failures (``shipped_before``).
"""

from __future__ import annotations

import dataclasses
import grp
import os
import queue
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from pydantic import SecretStr

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from gateway import broker_config
from gateway.config import Settings
from gateway.ingest.service import _LaneWorker
from gateway.runtime import Gateway
from gateway.store.db import connect
from gateway.store.sites import SiteRecord, upsert_sites
from protocol.mqtt import MqttEndpoint, MqttVersion, new_client
from safeguard.devservers import MosquittoServer, MosquittoTls, free_port
from tests.support import ADMIN_TOKEN, Api, safeguard, wait_for

pytestmark = pytest.mark.integration

GATEWAY_PASSWORD = "gw-secret-for-tests"
DISPATCH_PASSWORD = "dispatch-secret-for-tests"
SITES = ("site-a", "site-b")

# deploy/mosquitto/acl as shipped before issue 15 (the "today's config" these tests must fail on).
SHIPPED_BEFORE_ACL = """\
pattern write sg/v1/%u/agent/status
pattern write sg/v1/%u/+/heartbeat
pattern write sg/v1/%u/+/smoke
pattern write sg/v1/%u/+/exit
pattern write sg/v1/%u/+/snapshot

user safeguard-gateway
topic read sg/v1/#
topic write sg/v1/alerts/#

user dispatch
topic read sg/v1/alerts/#
"""


def _mosquitto_group() -> int | None:
    """Mosquitto started as root reads its files as the ``mosquitto`` user: give them its group."""
    if os.geteuid() != 0:
        return None
    try:
        return grp.getgrnam("mosquitto").gr_gid
    except KeyError:
        return None


def _readable(path: Path) -> None:
    group = _mosquitto_group()
    if group is not None:
        os.chown(path, -1, group)
        path.chmod(0o640)
    elif os.geteuid() == 0:  # Mosquitto falls back to `nobody`
        path.chmod(0o644)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class Pki:
    """A throwaway CA with a server certificate for 127.0.0.1, a client certificate it signed,
    and a second, untrusted CA with a client certificate of its own. Never committed: made per run."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path


def _ca(root: Path, name: str) -> tuple[Path, Path]:
    key, cert = root / f"{name}.key", root / f"{name}.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=Safety Guard test {name}",
             "-keyout", str(key), "-out", str(cert))
    return key, cert


def _leaf(root: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    key, csr, cert, ext = root / f"{name}.key", root / f"{name}.csr", root / f"{name}.crt", root / f"{name}.ext"
    ext.write_text(extensions, encoding="utf-8")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr))
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]), "-CAcreateserial",
             "-days", "2", "-extfile", str(ext), "-out", str(cert))
    for path in (key, cert):
        _readable(path)
    return cert, key


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    root = Path(tempfile.mkdtemp(prefix="safeguard-pki-"))
    root.chmod(0o755)
    ca, other = _ca(root, "ca"), _ca(root, "other-ca")
    server = _leaf(root, "server", ca, "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    client = _leaf(root, "client", ca, "extendedKeyUsage=clientAuth\n")
    other_client = _leaf(root, "other-client", other, "extendedKeyUsage=clientAuth\n")
    for cert in (ca[1], other[1]):
        cert.chmod(0o644)
    yield Pki(ca[1], *server, *client, other[1], *other_client)
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class Broker:
    server: MosquittoServer
    external: str  # the sites' and dispatch's listener
    internal: str  # the gateway's listener
    ca: Path | None
    settings: Settings  # the gateway's, on the internal listener
    identity: Path
    passwords: dict[str, str] = field(default_factory=dict)

    def regenerate(self) -> None:
        broker_config.generate(self.settings, self.identity, group=_mosquitto_group(),
                               reload=broker_config.Reload(pid=self.server.pid))


def _register(database_url: str, sites: tuple[str, ...]) -> dict[str, str]:
    with connect(database_url) as conn:
        upsert_sites(conn, [SiteRecord(id=site) for site in sites])
        issued = {site: broker_config.issue_site_secret(conn, site) for site in sites}
        conn.commit()
    return issued


def _gateway_settings(database_url: str, url: str, ca: Path | None, **extra: Any) -> Settings:
    return Settings(mqtt_url=url.replace("://", f"://safeguard-gateway:{GATEWAY_PASSWORD}@"),
                    mqtt_ca_file=str(ca) if ca else None, mqtt_client_id="safeguard-gateway",
                    broker_dispatch_password=SecretStr(DISPATCH_PASSWORD), database_url=database_url,
                    api_host="127.0.0.1", api_port=0, bootstrap_token=SecretStr(ADMIN_TOKEN),
                    batch_interval_s=0.05, sweep_interval_s=0.2, **extra)


@pytest.fixture
def broker(database_url: str, pki: Pki) -> Iterator[Broker]:
    """Mosquitto with the generated configuration: two TLS listeners, the registry's sites."""
    root = Path(tempfile.mkdtemp(prefix="safeguard-identity-"))
    root.chmod(0o755)
    passwords = _register(database_url, SITES)
    identity = root / "identity"
    tls = MosquittoTls(pki.server_cert, pki.server_key)
    server = MosquittoServer(root / "mqtt", identity=identity, tls=tls)
    # The files must exist before the broker starts; their content needs no port.
    broker_config.generate(_gateway_settings(database_url, "mqtts://127.0.0.1:1", pki.ca), identity,
                           group=_mosquitto_group())
    server.start()
    settings = _gateway_settings(database_url, server.internal_url, pki.ca)
    yield Broker(server, server.url, server.internal_url, pki.ca, settings, identity,
                 {**passwords, "safeguard-gateway": GATEWAY_PASSWORD, "dispatch": DISPATCH_PASSWORD})
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def shipped_before(database_url: str) -> Iterator[Broker]:
    """The configuration before issue 15: one plain listener, the pattern ACL, any client id."""
    root = Path(tempfile.mkdtemp(prefix="safeguard-acl-"))
    root.chmod(0o755)
    passwords = {"site-a": "pw-a", "site-b": "pw-b", "safeguard-gateway": GATEWAY_PASSWORD,
                 "dispatch": DISPATCH_PASSWORD}
    pw_file, acl = root / "passwords", root / "acl"
    pw_file.write_text("".join(f"{u}:{broker_config.hash_password(p)}\n" for u, p in passwords.items()))
    acl.write_text(SHIPPED_BEFORE_ACL)
    for path in (pw_file, acl):
        path.chmod(0o644)
    server = MosquittoServer(root / "mqtt", auth=(pw_file, acl))
    server.start()
    yield Broker(server, server.url, server.url, None, _gateway_settings(database_url, server.url, None), root,
                 passwords)
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["generated", pytest.param("shipped_before", marks=pytest.mark.xfail(
    strict=True, reason="the configuration before issue 15 lets this happen"))])
def any_broker(request: pytest.FixtureRequest) -> Broker:
    chosen: Broker = request.getfixturevalue("broker" if request.param == "generated" else "shipped_before")
    return chosen


class Client:
    """A paho client that records what it receives and whether it was ever disconnected."""

    def __init__(self, broker: Broker, user: str, *, internal: bool = False, client_id: str | None = None,
                 subscribe: str | None = None, password: str | None = None) -> None:
        endpoint = MqttEndpoint.parse(broker.internal if internal else broker.external)
        endpoint = MqttEndpoint(endpoint.host, endpoint.port, endpoint.tls, user,
                                password if password is not None else broker.passwords[user],
                                str(broker.ca) if broker.ca else None)
        self.received: queue.Queue[str] = queue.Queue()
        self.disconnects: list[str] = []
        self.refused: str | None = None
        self._ready = threading.Event()
        self._subscribe = subscribe
        self.client = new_client(endpoint, client_id or f"{user}-test", MqttVersion.V5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._ready.set()
        self.client.on_disconnect = lambda _c, _u, _f, reason, _p: self.disconnects.append(str(reason))
        self.client.on_message = lambda _c, _u, m: self.received.put(m.topic)
        self.client.connect(endpoint.host, endpoint.port)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.refused = str(reason)
            self._ready.set()
            client.disconnect()
        elif self._subscribe:
            client.subscribe(self._subscribe, qos=1)
        else:
            self._ready.set()

    def ready(self) -> Client:
        assert self._ready.wait(15), "no CONNACK"
        assert self.refused is None, f"refused: {self.refused}"
        return self

    def outcome(self) -> str | None:
        """None when connected, else the broker's refusal."""
        assert self._ready.wait(15), "no CONNACK"
        return self.refused

    def publish(self, topic: str, payload: bytes = b"{}") -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _exactly(observer: Client, marker_from: Client, marker: str, expected: list[str]) -> list[str]:
    """What ``observer`` got, up to ``marker`` (published last: everything before it has arrived)."""
    marker_from.publish(marker, b"last")
    got: list[str] = []
    while True:
        topic = observer.received.get(timeout=10)
        if topic == marker:
            break
        got.append(topic)
    assert sorted(got) == sorted(expected)
    return got


def test_a_site_publishes_only_its_own_contract_topics(broker: Broker) -> None:
    gateway = Client(broker, "safeguard-gateway", internal=True, subscribe="sg/v1/#").ready()
    site = Client(broker, "site-a").ready()
    try:
        allowed = ["sg/v1/site-a/cam-1/heartbeat", "sg/v1/site-a/smoke-1/smoke", "sg/v1/site-a/exit-1/exit",
                   "sg/v1/site-a/exit-1/snapshot", "sg/v1/site-a/agent/status"]
        refused = ["sg/v1/site-a/cam-1/video", "sg/v1/site-a/cam-1/heartbeat/extra", "sg/v1/site-a/heartbeat",
                   "sg/v1/site-b/cam-1/heartbeat", "sg/v1/site-b/agent/status", "sg/v1/alerts/site-a",
                   "sg/v1/alerts/site-b", "sg/v1/site-a/agent/ack", "sg/v1/site-b/agent/ack"]
        for topic in refused + allowed:
            site.publish(topic)
        _exactly(gateway, site, "sg/v1/site-a/cam-9/heartbeat", allowed)
    finally:
        site.close()
        gateway.close()


def test_a_site_reads_only_its_own_acknowledgements(any_broker: Broker) -> None:
    gateway = Client(any_broker, "safeguard-gateway", internal=True).ready()
    site_a = Client(any_broker, "site-a", subscribe="sg/v1/#").ready()
    site_b = Client(any_broker, "site-b").ready()
    try:
        site_b.publish("sg/v1/site-b/cam-1/heartbeat")
        for topic in ("sg/v1/site-b/agent/ack", "sg/v1/alerts/site-b", "sg/v1/alerts/site-a",
                      "sg/v1/site-a/agent/ack"):
            gateway.publish(topic)
        gateway.publish("sg/v1/site-a/agent/ack", b"last")
        got = [site_a.received.get(timeout=10) for _ in range(2)]  # its own ack, twice, and nothing else
        assert got == ["sg/v1/site-a/agent/ack"] * 2
        time.sleep(0.2)  # a message wrongly let through would have been delivered before the last one
        assert site_a.received.empty()
    finally:
        for client in (site_a, site_b, gateway):
            client.close()


def test_a_site_cannot_take_the_gateways_client_id(any_broker: Broker) -> None:
    gateway = Client(any_broker, "safeguard-gateway", internal=True, client_id="safeguard-gateway-alarm",
                     subscribe="sg/v1/#").ready()
    try:
        for i in range(5):  # the finding: five takeovers in eight seconds
            intruder = Client(any_broker, "site-a", client_id="safeguard-gateway-alarm").ready()
            intruder.publish(f"sg/v1/site-a/cam-{i}/heartbeat")
            assert gateway.received.get(timeout=10) == f"sg/v1/site-a/cam-{i}/heartbeat"
            intruder.close()
        # Nor may a site's credentials use the gateway's listener at all.
        assert Client(any_broker, "site-a", internal=True, client_id="safeguard-gateway-alarm").outcome() \
            == "Not authorized"
        assert gateway.disconnects == []
    finally:
        gateway.close()


def test_the_gateways_ingest_lanes_stay_connected_over_tls(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real ingest, over TLS with its username and password: site A connecting with each lane's
    client id never disconnects a lane."""
    lost: list[str] = []
    original = _LaneWorker._on_disconnect

    def counting(self: _LaneWorker, *args: Any) -> None:
        lost.append(self.plan.lane)
        original(self, *args)

    monkeypatch.setattr(_LaneWorker, "_on_disconnect", counting)
    gw = Gateway(broker.settings)
    gw.start()
    try:
        assert gw.ingest is not None
        assert gw.ingest.wait_connected(15)
        for lane in gw.ingest.lanes:
            for _ in range(3):
                Client(broker, "site-a", client_id=lane.plan.client_id).ready().close()
        assert gw.ingest.connected
        assert lost == []
    finally:
        gw.stop()


def test_service_accounts_cannot_publish_site_topics(any_broker: Broker, database_url: str) -> None:
    """Not even a site registered under a service account's name (an old database may hold one):
    broker-config gives it no account, and the service account no site rights."""
    with connect(database_url) as conn:  # past the registration check, as before issue 15
        conn.execute("INSERT INTO sites (id) VALUES ('dispatch'), ('safeguard-gateway')")
        conn.commit()
    if any_broker.server.identity is not None:
        with connect(database_url) as conn:
            for reserved in ("dispatch", "safeguard-gateway"):
                broker_config.issue_site_secret(conn, reserved)
            conn.commit()
        any_broker.regenerate()
    observer = Client(any_broker, "safeguard-gateway", internal=True, client_id="observer",
                      subscribe="sg/v1/#").ready()
    gateway = Client(any_broker, "safeguard-gateway", internal=True).ready()
    dispatch = Client(any_broker, "dispatch").ready()
    site = Client(any_broker, "site-a").ready()
    try:
        for topic in ("sg/v1/safeguard-gateway/cam-1/heartbeat", "sg/v1/site-a/cam-1/heartbeat",
                      "sg/v1/site-a/agent/status"):
            gateway.publish(topic)
        for topic in ("sg/v1/dispatch/cam-1/heartbeat", "sg/v1/dispatch/agent/status",
                      "sg/v1/site-a/cam-1/heartbeat", "sg/v1/alerts/site-a"):
            dispatch.publish(topic)
        _exactly(observer, site, "sg/v1/site-a/cam-9/heartbeat", [])
    finally:
        for client in (observer, gateway, dispatch, site):
            client.close()


def test_a_reserved_site_id_is_refused_at_registration(database_url: str, tmp_path: Path) -> None:
    settings = _gateway_settings(database_url, "mqtt://127.0.0.1:1883", None)
    for site in ("dispatch", "safeguard-gateway", "safeguard-gateway-alarm", "safeguard-gateway-host-ingest"):
        with pytest.raises(broker_config.ReservedSiteId):
            broker_config.check_site_id(settings, site)
    broker_config.check_site_id(settings, "safeguard-site")  # a prefix of no service id: fine

    csv = tmp_path / "sites.csv"
    csv.write_text("id,name,city,county,category,address,cameras_required\n"
                   "site-x,Fine,,,,,0\ndispatch,Not fine,,,,,0\n", encoding="utf-8")
    env = {"SAFEGUARD_MQTT_URL": f"mqtt://safeguard-gateway:{GATEWAY_PASSWORD}@127.0.0.1:1883"}
    result = safeguard("sites", "import", str(csv), database_url=database_url, env=env)
    assert result.returncode == 2
    assert "'dispatch' is reserved" in result.stderr
    with connect(database_url) as conn:
        assert conn.execute("SELECT count(*) AS n FROM sites WHERE id IN ('site-x', 'dispatch')").fetchone() == {"n": 0}

    gw = Gateway(settings, ingest=False, supervise=False)
    gw.start()
    try:
        http = Api(gw.api_url).http
        for site in ("dispatch", "safeguard-gateway-alarm"):
            response = http.put(f"/api/v1/sites/{site}", json={"name": "x"})
            assert response.status_code == 422, response.text
            assert "reserved" in response.json()["detail"]
        assert http.put("/api/v1/sites/site-y", json={"name": "y"}).status_code == 200
    finally:
        gw.stop()


def test_sites_added_and_removed_reach_the_broker_on_reload(broker: Broker, database_url: str) -> None:
    """``broker-config --watch``: a site given a secret connects after the rewrite and SIGHUP; one
    whose account is revoked, or whose secret is rotated, is locked out (its open connection too)
    and no one else is disconnected."""
    stop = threading.Event()
    written: queue.Queue[broker_config.BrokerFiles] = queue.Queue()
    watcher = threading.Thread(target=broker_config.watch, args=(broker.settings, broker.identity), kwargs={
        "interval_s": 0.1, "stop": stop, "group": _mosquitto_group(),
        "reload": broker_config.Reload(pid=broker.server.pid), "on_write": written.put}, daemon=True)
    watcher.start()
    try:
        assert written.get(timeout=20).sites == SITES
        with connect(database_url) as conn:
            upsert_sites(conn, [SiteRecord(id="site-c")])
            conn.commit()
        assert Client(broker, "site-c", password="not-yet").outcome() == "Not authorized"
        broker.passwords.update(_register(database_url, ("site-c",)))
        assert written.get(timeout=20).sites == (*SITES, "site-c")
        wait_for(lambda: Client(broker, "site-c").outcome() is None, what="site-c admitted after the reload")

        site_a, site_b = Client(broker, "site-a").ready(), Client(broker, "site-b").ready()
        with connect(database_url) as conn:
            assert broker_config.revoke_site_secret(conn, "site-b")
            conn.commit()
        assert written.get(timeout=20).sites == ("site-a", "site-c")
        wait_for(lambda: Client(broker, "site-b").outcome() == "Not authorized", what="site-b refused")
        wait_for(lambda: site_b.disconnects, what="site-b's open connection closed by the reload")
        site_b.close()
        assert site_a.disconnects == []  # the reload disconnects no one else

        old_secret = broker.passwords["site-a"]
        broker.passwords.update(_register(database_url, ("site-a",)))  # rotated
        assert written.get(timeout=20).sites == ("site-a", "site-c")
        wait_for(lambda: Client(broker, "site-a", password=old_secret).outcome() == "Not authorized",
                 what="site-a's old secret refused")
        wait_for(lambda: site_a.disconnects, what="the connection on the old secret closed by the reload")
        assert Client(broker, "site-a").outcome() is None
        site_a.close()
    finally:
        stop.set()
        watcher.join(10)


def test_an_untrusted_broker_certificate_is_refused(broker: Broker, pki: Pki) -> None:
    endpoint = MqttEndpoint.parse(broker.external)
    for ca in (pki.other_ca, None):  # another CA; the system's trust store
        client = new_client(MqttEndpoint(endpoint.host, endpoint.port, True, "site-a", broker.passwords["site-a"],
                                         str(ca) if ca else None), "site-a", MqttVersion.V5)
        with pytest.raises(ssl.SSLCertVerificationError):
            client.connect(endpoint.host, endpoint.port)
    # A plaintext client on the TLS listener never gets a CONNACK.
    plain = Client(dataclasses.replace(broker, external=broker.external.replace("mqtts://", "mqtt://"), ca=None),
                   "site-a")
    try:
        wait_for(lambda: plain.disconnects, what="the TLS listener to drop a plaintext client")
        assert not plain._ready.is_set()
    finally:
        plain.close()


def test_a_required_client_certificate_must_come_from_the_ca(database_url: str, pki: Pki, tmp_path: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="safeguard-mtls-"))
    root.chmod(0o755)
    identity = root / "identity"
    settings = _gateway_settings(database_url, "mqtts://127.0.0.1:1", pki.ca)
    passwords = _register(database_url, ("site-a",))
    broker_config.generate(settings, identity, group=_mosquitto_group())
    server = MosquittoServer(root / "mqtt", identity=identity,
                             tls=MosquittoTls(pki.server_cert, pki.server_key, pki.ca, require_certificate=True))
    server.start()
    try:
        endpoint = MqttEndpoint.parse(server.url)

        def attempt(cert: Path | None, key: Path | None) -> str | None:
            client = new_client(MqttEndpoint(endpoint.host, endpoint.port, True, "site-a", passwords["site-a"],
                                             str(pki.ca), str(cert) if cert else None, str(key) if key else None),
                                "site-a", MqttVersion.V5)
            result: queue.Queue[str | None] = queue.Queue()
            client.on_connect = lambda _c, _u, _f, reason, _p: result.put(None if not reason.is_failure
                                                                          else str(reason))
            client.on_disconnect = lambda *_a: result.put("disconnected")
            try:
                client.connect(endpoint.host, endpoint.port)
            except (ssl.SSLError, OSError) as exc:
                return f"TLS: {exc}"
            client.loop_start()
            try:
                return result.get(timeout=15)
            finally:
                client.disconnect()
                client.loop_stop()

        assert attempt(pki.client_cert, pki.client_key) is None
        assert attempt(pki.other_client_cert, pki.other_client_key) is not None
        assert attempt(None, None) is not None
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_the_python_hash_is_mosquittos(tmp_path: Path) -> None:
    """Our ``$7$`` hash is what mosquitto_passwd writes (PBKDF2-SHA512), both ways."""
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd not installed")
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "someone", "pässword"], check=True,
                   capture_output=True)
    hashed = passwords.read_text(encoding="utf-8").strip().split(":", 1)[1]
    assert hashed.startswith("$7$")
    assert broker_config.verify_password("pässword", hashed)
    assert not broker_config.verify_password("password", hashed)
    ours = broker_config.hash_password("pässword")
    assert broker_config.verify_password("pässword", ours)
    assert ours.split("$")[2] == hashed.split("$")[2]  # the same iteration count


def test_the_edge_agent_and_the_gateway_over_tls_with_their_accounts(broker: Broker, tmp_path: Path) -> None:
    """The real agent (site.yaml's broker: mqtts URL with its secret, ca_file) and the real gateway
    (mqtt_url with its password, mqtt_ca_file): the agent's birth is stored."""
    gw = Gateway(broker.settings)
    gw.start()
    agent = Agent(AgentConfig.model_validate({
        "site": "site-a",
        "broker": {"url": broker.external.replace("://", f"://site-a:{broker.passwords['site-a']}@"),
                   "ca_file": str(broker.ca)},
        "outbox": {"path": str(tmp_path / "outbox.db")},
        "smoke": [{"id": "smoke-1", "adapter": "simulated"}],
    }))
    agent.start()
    try:
        assert gw.ingest is not None
        assert gw.ingest.wait_connected(15)
        assert agent.publisher.wait_connected(15)

        def online() -> bool:
            with connect(broker.settings.database.url) as conn:
                row = conn.execute("SELECT online FROM agents WHERE site = 'site-a'").fetchone()
            return bool(row and row["online"])

        wait_for(online, what="site-a's agent online at the gateway")
    finally:
        agent.stop()
        gw.stop()


def test_the_shipped_mosquitto_conf_runs_on_the_generated_files(broker: Broker, pki: Pki) -> None:
    """deploy/mosquitto/mosquitto.conf, its paths and ports moved to ours, started by the real broker:
    the layout the other tests use is the shipped one."""
    shipped = (Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    external, internal = free_port(), free_port()

    class Shipped(MosquittoServer):
        def _config(self) -> str:
            text = shipped.replace("/mosquitto/auth", str(broker.identity))
            text = text.replace("/mosquitto/certs/server.crt", str(pki.server_cert))
            text = text.replace("/mosquitto/certs/server.key", str(pki.server_key))
            text = text.replace("listener 8883", f"listener {external} 127.0.0.1")
            text = text.replace("listener 1883", f"listener {internal} 127.0.0.1")
            text = text.replace("persistence true", "persistence false").replace("log_dest stdout", "log_dest stderr")
            return "\n".join(line for line in text.splitlines() if not line.startswith("persistence_location"))

    server = Shipped(broker.server.work_dir.parent / "shipped", port=external)
    server.start()
    try:
        shipped_broker = dataclasses.replace(broker, external=f"mqtts://127.0.0.1:{external}",
                                             internal=f"mqtt://127.0.0.1:{internal}")  # no TLS inside compose
        gateway = Client(shipped_broker, "safeguard-gateway", internal=True, client_id="safeguard-gateway-alarm",
                         subscribe="sg/v1/#").ready()
        intruder = Client(shipped_broker, "site-a", client_id="safeguard-gateway-alarm").ready()
        intruder.publish("sg/v1/site-a/cam-1/heartbeat")
        assert gateway.received.get(timeout=10) == "sg/v1/site-a/cam-1/heartbeat"
        assert Client(shipped_broker, "site-a", internal=True).outcome() == "Not authorized"
        assert gateway.disconnects == []
        intruder.close()
        gateway.close()
    finally:
        server.stop()


def test_broker_secret_is_printed_once_and_only_its_hash_kept(database_url: str) -> None:
    with connect(database_url) as conn:
        upsert_sites(conn, [SiteRecord(id="site-s")])
        conn.commit()
    result = safeguard("sites", "broker-secret", "site-s", database_url=database_url)
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip()
    assert len(secret) >= 32
    assert secret not in result.stderr
    with connect(database_url) as conn:
        row = conn.execute("SELECT password_hash FROM broker_credentials WHERE site = 'site-s'").fetchone()
    assert row is not None
    assert secret not in row["password_hash"]
    assert broker_config.verify_password(secret, row["password_hash"])
    assert safeguard("sites", "broker-secret", "nowhere", database_url=database_url).returncode == 2
    revoked = safeguard("sites", "broker-secret", "site-s", "--revoke", database_url=database_url)
    assert revoked.returncode == 0
    assert "revoked" in revoked.stderr


def test_the_broker_config_command(database_url: str, tmp_path: Path) -> None:
    _register(database_url, ("site-a",))
    out = tmp_path / "auth"
    env = {"SAFEGUARD_MQTT_URL": f"mqtt://safeguard-gateway:{GATEWAY_PASSWORD}@127.0.0.1:1883"}
    result = safeguard("broker-config", "--out", str(out), database_url=database_url, env=env)
    assert result.returncode == 0, result.stderr
    assert "1 site accounts" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [broker_config.EXTERNAL_PASSWORDS, broker_config.EXTERNAL_ACL, broker_config.INTERNAL_PASSWORDS,
         broker_config.INTERNAL_ACL])
    assert GATEWAY_PASSWORD not in result.stderr + "".join(p.read_text() for p in out.iterdir())

    no_reload = safeguard("broker-config", "--out", str(out), "--reload-pid-file", str(tmp_path / "none.pid"),
                          database_url=database_url, env=env)
    assert no_reload.returncode == 2
    assert "not told to reload" in no_reload.stderr
    no_password = safeguard("broker-config", "--out", str(out), database_url=database_url,
                            env={"SAFEGUARD_MQTT_URL": "mqtt://127.0.0.1:1883"})
    assert no_password.returncode == 2
    assert "mqtt_url must carry" in no_password.stderr
