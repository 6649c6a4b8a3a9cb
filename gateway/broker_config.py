"""Mosquitto's accounts and ACLs, generated from the site registry (``safeguard broker-config``).

Broker identity (issue 15, point 5; docs/operations.md, "Broker configuration"). The broker
has two listeners, each with its own password file and ACL (``per_listener_settings true``):

* the *external* listener (agents and the fire brigade's dispatch system, TLS) forces every
  client id to the account's username (``use_username_as_clientid true``), so a site's
  credentials can never take another client's id and knock it off the broker;
* the *internal* listener (the gateway's own processes) knows only the gateway account, so no
  site credential connects there at all.

Every site gets an explicit ``user`` section naming its own topics, and there is no
``pattern`` line: a pattern applies to every account, service accounts included, so a site
registered under a service account's name would have been spoken for by that account.

Site secrets: ``safeguard sites broker-secret SITE`` generates one, prints it once and keeps
only its Mosquitto hash (table ``broker_credentials``); a site without one has no broker
account. Service passwords come from the settings (the gateway's from ``mqtt_url``). No
secret is ever logged.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import shlex
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from gateway.config import Settings
from gateway.store import broker as store
from gateway.store.db import Conn, connect
from gateway.store.sites import site_registered
from protocol.topics import RESERVED_SITE_IDS

log = logging.getLogger(__name__)

# Mosquitto 2.0's password hash (src/password_mosq.c, pw__hash with pw_sha512_pbkdf2):
# "$7$" iterations "$" base64(salt) "$" base64(PBKDF2-HMAC-SHA512(password, salt, iterations)),
# a 12-byte salt, a 64-byte digest. mosquitto_passwd uses 101 iterations; any count is
# accepted on reading. A site secret is 192 random bits, so the low count costs nothing.
_PBKDF2_PREFIX = "$7$"
_SALT_BYTES = 12
DEFAULT_ITERATIONS = 101
_HASH_RE = re.compile(r"^\$7\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$")

EXTERNAL_PASSWORDS = "external.passwd"
EXTERNAL_ACL = "external.acl"
INTERNAL_PASSWORDS = "internal.passwd"
INTERNAL_ACL = "internal.acl"

# What a site's agent may publish (DESIGN section 6, wire contract section 3): only the
# contract's message types under its own prefix, and read only its own acknowledgements.
_SITE_WRITE = ("agent/status", "+/heartbeat", "+/smoke", "+/exit", "+/snapshot")
_SITE_READ = ("agent/ack",)


class BrokerConfigError(ValueError):
    """The broker's files cannot be generated; the message says what to set."""


class ReservedSiteId(ValueError):
    """A site id that would collide with a broker service account or client id."""


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    """The Mosquitto 2 password-file hash (``$7$...``) of ``password``."""
    salt = salt if salt is not None else os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"{_PBKDF2_PREFIX}{iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    match = _HASH_RE.match(hashed)
    if match is None:
        return False
    iterations, salt, digest = int(match[1]), base64.b64decode(match[2]), base64.b64decode(match[3])
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations), digest)


# --------------------------------------------------------------------------- reserved ids


def reserved_site_ids(settings: Settings) -> frozenset[str]:
    """Names no site may take: the service accounts, the gateway's client id, the configured extras."""
    names = {*RESERVED_SITE_IDS, settings.broker.dispatch_user, settings.mqtt.client_id,
             *settings.broker.reserved_site_ids}
    if settings.mqtt.endpoint.username:
        names.add(settings.mqtt.endpoint.username)
    return frozenset(names)


def check_site_id(settings: Settings, site: str) -> None:
    """Raise :class:`ReservedSiteId` for a site id a service account or gateway client id owns.

    On the external listener a site's client id is its id, and Mosquitto's client ids are one
    namespace across listeners: a site named like a gateway client (``{mqtt_client_id}-...``:
    ingest lanes, workers, the relay) would disconnect it on every connection."""
    if site in reserved_site_ids(settings) or site.startswith(f"{settings.mqtt.client_id}-"):
        raise ReservedSiteId(
            f"site id {site!r} is reserved for the broker's service accounts and the gateway's client ids"
            f" ({', '.join(sorted(reserved_site_ids(settings)))}, {settings.mqtt.client_id}-*)")


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """The four generated files, by name (see the module docstring)."""

    files: dict[str, str]
    sites: tuple[str, ...]  # the site accounts written
    skipped: tuple[str, ...]  # registered sites refused (a reserved id)


def _section(user: str, write: Iterable[str], read: Iterable[str]) -> list[str]:
    return [f"user {user}", *(f"topic write {t}" for t in write), *(f"topic read {t}" for t in read), ""]


def render(settings: Settings, sites: Iterable[Account]) -> BrokerFiles:
    """Password files and ACLs for both listeners from the site accounts and the settings."""
    gateway = settings.mqtt.endpoint
    if not (gateway.username and gateway.password):
        raise BrokerConfigError("mqtt_url must carry the gateway's broker username and password"
                                " (mqtt://USER:PASSWORD@host:port): they make the gateway's account")
    header = ["# Generated by `safeguard broker-config` from the site registry; edits are overwritten.", ""]
    external_pw, external_acl, written, skipped = [], [*header], [], []
    for account in sorted(sites, key=lambda a: a.username):
        try:
            check_site_id(settings, account.username)
        except ReservedSiteId:
            skipped.append(account.username)
            continue
        site = account.username
        external_pw.append(f"{site}:{account.password_hash}")
        external_acl += _section(site, (f"sg/v1/{site}/{t}" for t in _SITE_WRITE),
                                 (f"sg/v1/{site}/{t}" for t in _SITE_READ))
        written.append(site)
    if settings.broker.dispatch_password is not None:
        dispatch = settings.broker.dispatch_user
        external_pw.append(f"{dispatch}:{hash_password(settings.broker.dispatch_password.get_secret_value())}")
        external_acl += ["# The fire brigade's dispatch system: alert changes of every site.",
                         *_section(dispatch, (), ("sg/v1/alerts/#",))]
    internal_acl = [*header, "# The gateway: every site's messages; alert changes and agent acknowledgements.",
                    *_section(gateway.username, ("sg/v1/alerts/#", "sg/v1/+/agent/ack"), ("sg/v1/#",))]
    internal_pw = [f"{gateway.username}:{hash_password(gateway.password)}"]
    return BrokerFiles(
        files={EXTERNAL_PASSWORDS: "\n".join(external_pw) + "\n", EXTERNAL_ACL: "\n".join(external_acl),
               INTERNAL_PASSWORDS: "\n".join(internal_pw) + "\n", INTERNAL_ACL: "\n".join(internal_acl)},
        sites=tuple(written), skipped=tuple(skipped),
    )


# --------------------------------------------------------------------------- site secrets


def site_accounts(conn: Conn) -> list[Account]:
    """Every registered site that has a broker secret."""
    return [Account(r["site"], r["password_hash"]) for r in store.site_credentials(conn)]


def issue_site_secret(conn: Conn, site: str) -> str:
    """A new broker secret for ``site`` (replacing any old one); only its hash is stored."""
    if not site_registered(conn, site):
        raise BrokerConfigError(f"site {site!r} is not registered (safeguard sites import, PUT /api/v1/sites)")
    secret = secrets.token_urlsafe(24)
    store.set_site_password(conn, site, hash_password(secret))
    return secret


def revoke_site_secret(conn: Conn, site: str) -> bool:
    """Remove ``site``'s broker account (effective at the next broker-config and reload)."""
    return store.delete_site_password(conn, site)


# --------------------------------------------------------------------------- writing, reloading


def write_files(out_dir: Path, generated: BrokerFiles, *, group: int | None = None) -> None:
    """Write the files, each atomically (rename: Mosquitto never reads half a file), mode 0640
    (``group``: their group, e.g. Mosquitto's, which reads them after dropping root)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in generated.files.items():
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, 0o640)
            if group is not None:
                os.chown(tmp, -1, group)
            os.replace(tmp, out_dir / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


@dataclass(frozen=True, slots=True)
class Reload:
    """How to tell Mosquitto to re-read its password files and ACLs (SIGHUP; any of these)."""

    pid: int | None = None
    pid_file: Path | None = None
    command: str | None = None

    def __call__(self) -> None:
        try:
            if self.command:
                subprocess.run(shlex.split(self.command), check=True, timeout=30)  # noqa: S603 - the operator's own reload command
                log.info("broker reloaded: %s", self.command)
                return
            pid = self.pid
            if self.pid_file is not None:
                pid = int(self.pid_file.read_text(encoding="ascii").strip())
            if pid is None:
                return
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            raise BrokerConfigError(f"the files are written but the broker was not told to reload them: {exc}"
                                    " (it reads them at its next start or SIGHUP)") from None
        log.info("broker reloaded: SIGHUP to pid %d", pid)

    @property
    def configured(self) -> bool:
        return bool(self.command or self.pid or self.pid_file)


def generate(settings: Settings, out_dir: Path, *, group: int | None = None,
             reload: Reload | None = None) -> BrokerFiles:
    """Read the registry, write the files, reload the broker (when told how)."""
    with connect(settings.database.url) as conn:
        accounts = site_accounts(conn)
    generated = _write(settings, accounts, out_dir, group)
    if reload is not None:
        reload()
    return generated


def _write(settings: Settings, accounts: list[Account], out_dir: Path, group: int | None) -> BrokerFiles:
    generated = render(settings, accounts)
    for site in generated.skipped:
        log.warning("broker-config: registered site %r has a reserved id (a service account or the gateway's"
                    " client id): no broker account written for it", site)
    write_files(out_dir, generated, group=group)
    log.info("broker-config: wrote %s (%d site accounts)", out_dir, len(generated.sites))
    return generated


def watch(settings: Settings, out_dir: Path, *, interval_s: float, stop: threading.Event,
          group: int | None = None, reload: Reload | None = None,
          on_write: Callable[[BrokerFiles], None] | None = None) -> None:
    """Regenerate every ``interval_s`` while ``stop`` is unset; rewrite and reload only on a change
    (a site's secret issued, rotated or revoked, or the site removed from the registry)."""
    last_sites: tuple[tuple[str, str], ...] | None = None
    while not stop.is_set():
        try:
            with connect(settings.database.url) as conn:
                accounts = site_accounts(conn)
            key = tuple((a.username, a.password_hash) for a in accounts)
            if key != last_sites:
                generated = _write(settings, accounts, out_dir, group)
                if reload is not None:
                    reload()
                last_sites = key  # after the reload: a failed one is retried with the next round
                if on_write is not None:
                    on_write(generated)
        except BrokerConfigError as exc:
            log.error("broker-config: %s; retrying in %.0f s", exc, interval_s)  # the message says it all
        except psycopg.OperationalError as exc:  # the database away: the files in place stay valid
            log.warning("broker-config: database unreachable (%s); retrying in %.0f s", exc, interval_s)
        except Exception:  # anything else: keep the files in place, say it in full, retry
            log.exception("broker-config: regeneration failed; retrying in %.0f s", interval_s)
        stop.wait(interval_s)
