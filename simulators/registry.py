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


def register_via_api(api_url: str, token: str, sites: Iterable[SiteSpec]) -> int:
    """PUT /api/v1/sites/{id} for each site (needs an admin token); returns how many."""
    count = 0
    for site in sites:
        body = {k: v for k, v in _row(site).items() if k != "id"}
        request = urllib.request.Request(  # noqa: S310 - the operator gives the gateway's URL
            f"{api_url.rstrip('/')}/api/v1/sites/{site.id}", data=json.dumps(body).encode(), method="PUT",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10):  # noqa: S310
                count += 1
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"registering site {site.id!r} failed: HTTP {exc.code} {exc.read()[:200]!r}") from None
    return count


def write_sites_csv(path: Path, sites: Iterable[SiteSpec]) -> int:
    rows = [_row(s) for s in sites]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)
