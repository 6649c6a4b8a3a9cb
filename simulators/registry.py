"""Register simulated sites with a gateway: through its API, or as a CSV for `safeguard sites import`."""

from __future__ import annotations

import csv
import json
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from simulators.scenario import SiteSpec

# As gateway/store/sites.py CSV_COLUMNS (the contact columns are optional there).
CSV_COLUMNS = ("id", "name", "city", "county", "category", "address", "cameras_required", "contact_name",
               "contact_phone")


def _row(site: SiteSpec) -> dict[str, object]:
    return {"id": site.id, "name": site.name or site.id, "city": site.city, "county": site.county,
            "category": site.category, "address": site.address, "cameras_required": len(site.cameras),
            "contact_name": getattr(site, "contact_name", ""), "contact_phone": getattr(site, "contact_phone", "")}


class GatewayApiError(ConnectionError):
    """The gateway's API refused a registration or could not be reached (the message says which)."""


def register_via_api(api_url: str, token: str, sites: Iterable[SiteSpec]) -> int:
    """PUT /api/v1/sites/{id} for each site (needs an admin token); returns how many."""
    count = 0
    for site in sites:
        body = {k: v for k, v in _row(site).items() if k != "id"}
        _call(api_url, token, "PUT", site.id, json.dumps(body).encode(), doing="registering")
        count += 1
    return count


def delete_via_api(api_url: str, token: str, site_ids: Iterable[str]) -> int:
    """DELETE /api/v1/sites/{id} for each site, with all it recorded (needs an admin token)."""
    count = 0
    for site in site_ids:
        _call(api_url, token, "DELETE", site, None, doing="deleting")
        count += 1
    return count


def _call(api_url: str, token: str, method: str, site: str, body: bytes | None, *, doing: str) -> None:
    request = urllib.request.Request(  # noqa: S310 - the operator gives the gateway's URL
        f"{api_url.rstrip('/')}/api/v1/sites/{site}", data=body, method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30):  # noqa: S310 - the operator gives the gateway's URL
            pass
    except urllib.error.HTTPError as exc:
        raise GatewayApiError(f"{doing} site {site!r} failed: HTTP {exc.code} {exc.read()[:200]!r}") from None
    except urllib.error.URLError as exc:
        raise GatewayApiError(f"{doing} site {site!r} failed: cannot reach {api_url}: {exc.reason}") from None


def write_sites_csv(path: Path, sites: Iterable[SiteSpec]) -> int:
    rows = [_row(s) for s in sites]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)
