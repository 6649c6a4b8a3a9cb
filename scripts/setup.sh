#!/usr/bin/env bash
# Idempotent developer set-up for Safety Guard (used by ./run and the README).
#
#   scripts/setup.sh             venv + Python deps + Mosquitto and PostgreSQL server binaries
#   scripts/setup.sh --browser   ... and Chromium and a CJK font, for the browser tests (./run test)
#
# Re-runs are fast: the venv is only created when missing, `pip install -e '.[dev,demo]'` only
# runs when pyproject.toml is newer than .venv/.installed, and system packages are only
# installed when their binaries cannot be found. Missing system packages are installed
# with apt-get when running as root on a Debian/Ubuntu machine; otherwise we say what to
# install and exit 1. Installing `postgresql`/`mosquitto` from Debian may start system
# services on 5432/1883: harmless, Safety Guard's dev servers use private ports.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
STAMP="$VENV/.installed"
WANT_BROWSER=0

say() { printf 'setup: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

for arg in "$@"; do
    case "$arg" in
        --browser) WANT_BROWSER=1 ;;
        -h|--help)
            sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
            exit 0 ;;
        *) die "unknown argument: $arg (accepted: --browser)" ;;
    esac
done

can_apt() { [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; }

APT_UPDATED=0
apt_install() {
    say "installing with apt-get: $*"
    if [ "$APT_UPDATED" -eq 0 ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# ------------------------------------------------------------------------ Python / venv

py_ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1; }

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 && py_ok "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if [ -x "$VENV/bin/python" ]; then
    py_ok "$VENV/bin/python" || die "$VENV uses $("$VENV/bin/python" -V 2>&1); Python >= 3.11 is required. Remove it (rm -rf .venv) and re-run."
else
    PY="$(find_python)" || die "Python >= 3.11 is required but python3 is $(python3 -V 2>&1 || echo 'not installed'). Install it: apt-get install python3  (or: dnf install python3.11 / brew install python@3.12), or point PYTHON=/path/to/python3.11 at one."
    say "creating virtualenv .venv with $PY ($("$PY" -V 2>&1))"
    if ! "$PY" -m venv "$VENV"; then
        rm -rf "$VENV"
        if can_apt; then
            # Debian/Ubuntu ship venv/ensurepip separately.
            apt_install python3-venv
            "$PY" -m venv "$VENV" || { rm -rf "$VENV"; die "could not create .venv with $PY"; }
        else
            die "could not create .venv with $PY. On Debian/Ubuntu install python3-venv (apt-get install python3-venv)."
        fi
    fi
fi

if [ ! -e "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    say "installing Python dependencies (pip install -e '.[dev,demo]': the tests' tools, the demo's broker)"
    "$VENV/bin/python" -m pip install -q -e '.[dev,demo]'
    touch "$STAMP"
fi

# ------------------------------------------------------------------------ server binaries
# Same search order as safeguard/devservers.py.

have_postgres() {
    local initdb bindir
    for initdb in /usr/lib/postgresql/*/bin/initdb; do
        [ -x "$initdb" ] && return 0
    done
    command -v initdb >/dev/null 2>&1 && return 0
    if command -v pg_config >/dev/null 2>&1; then
        bindir="$(pg_config --bindir 2>/dev/null || true)"
        [ -n "$bindir" ] && [ -x "$bindir/initdb" ] && return 0
    fi
    return 1
}

have_mosquitto() {
    local candidate
    command -v mosquitto >/dev/null 2>&1 && return 0
    for candidate in /usr/sbin/mosquitto /usr/local/sbin/mosquitto /opt/homebrew/sbin/mosquitto /usr/local/opt/mosquitto/sbin/mosquitto; do
        [ -x "$candidate" ] && return 0
    done
    return 1
}

have_chromium() {
    local candidate
    for candidate in chromium chromium-browser google-chrome google-chrome-stable; do
        command -v "$candidate" >/dev/null 2>&1 && return 0
    done
    return 1
}

# The console is Chinese by default: without a CJK font Chromium draws boxes.
have_cjk_font() { command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=zh 2>/dev/null | head -n 1)" ]; }

missing=()
have_mosquitto || missing+=(mosquitto)
have_postgres || missing+=(postgresql)
if [ "$WANT_BROWSER" -eq 1 ]; then
    have_chromium || missing+=(chromium)
    have_cjk_font || missing+=(fonts-wqy-microhei)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    if can_apt; then
        apt_install "${missing[@]}"
        have_mosquitto || die "mosquitto still not found after apt-get install"
        have_postgres || die "PostgreSQL server binaries (initdb) still not found after apt-get install"
        if [ "$WANT_BROWSER" -eq 1 ]; then
            have_chromium || die "chromium still not found after apt-get install"
        fi
    else
        say "missing system packages: ${missing[*]}"
        say "install them, then re-run:"
        say "  Debian/Ubuntu:  sudo apt-get install ${missing[*]}"
        say "  Fedora:         sudo dnf install ${missing[*]/postgresql/postgresql-server}"
        say "  macOS:          brew install ${missing[*]/postgresql/postgresql@15}"
        exit 1
    fi
fi

