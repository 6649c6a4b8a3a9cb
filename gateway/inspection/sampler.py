"""The plan's spot-check sample as pure functions: registry, risks and seed in, inspection list out.

The provincial plan (县级排查、市级检查): counties inspect every institution; a city spot-checks
at least 1/2 of its counties (县、市、区) and at least 10 % of its institutions; the province
spot-checks 5 % of the institutions. This module draws such a sample, weighted toward higher risk
but never certain, reproducibly from a seed. No database or clock here (see
:mod:`gateway.inspection.registry` for the inputs); docs/inspection.md explains the rules.

Randomness: every site gets one Efraimidis-Spirakis key ``log(u) / risk`` (larger is better), with
``u`` uniform in (0, 1) derived from a hash of (seed, site id). Taking the k largest keys is
weighted sampling without replacement with weights ``risk``. A site's key depends only on the
seed and its own id, so the result does not depend on the order of the registry, and adding or
removing one site does not reshuffle the others. The largest key within a group of sites is
distributed exactly like one ES key with the group's total risk as weight (P(max <= x) is the
product of x**w_i), so ranking counties or cities by their best site's key is weighted sampling
of counties by total risk, from the same keys.
"""

# ruff: noqa: RUF001 - the inspectors' texts use Chinese full-width punctuation on purpose
from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from gateway.reports.spreadsheet import guard, to_csv

# Categories the plan singles out as dangerous or demanding (体育类、舞蹈类、户外类), and common
# kinds of them; matched case-insensitively as substrings of a site's category.
HIGH_RISK_CATEGORIES: tuple[str, ...] = (
    "体育", "舞蹈", "户外", "武术", "游泳", "跆拳道", "攀岩", "拓展",
    "sport", "dance", "outdoor", "martial", "swim", "taekwondo", "climb",
)

CSV_HEADER: tuple[str, ...] = ("序号", "场所编号", "场所名称", "市", "县区", "类别", "风险分", "抽查理由")


class Level(StrEnum):
    CITY = "city"
    PROVINCE = "province"


class SamplingError(ValueError):
    """The sample cannot be drawn as asked (no sites in the city, a bad risk, a duplicate id...)."""


@dataclass(frozen=True, slots=True)
class Site:
    """One registered institution, as much of it as the sample and the inspection list need."""

    id: str
    city: str
    county: str
    category: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class RiskInputs:
    """A site's current risk indicators (:func:`gateway.inspection.registry.load_registry` reads them)."""

    open_critical: int = 0  # alerts not resolved, by severity
    open_major: int = 0
    open_minor: int = 0
    cameras_required: int = 0
    cameras: int = 0  # camera devices known for the site
    cameras_online: int = 0  # of those, online now (fresh heartbeat, stream ok)


@dataclass(frozen=True, slots=True)
class RiskWeights:
    """Points per risk factor; a site's score is ``base`` plus the points of its factors."""

    base: float = 1.0  # every site keeps a chance
    critical: float = 3.0  # per open critical alert
    major: float = 2.0
    minor: float = 1.0
    alerts_cap: float = 8.0  # alert points stop here, so one noisy site does not swamp the draw
    cameras_offline: float = 4.0  # times the share of cameras not online (all offline: +4)
    high_risk_category: float = 2.0
    high_risk_categories: tuple[str, ...] = HIGH_RISK_CATEGORIES


DEFAULT_WEIGHTS = RiskWeights()


@dataclass(frozen=True, slots=True)
class Risk:
    score: float  # > 0; the sampling weight
    reasons: tuple[str, ...]  # the risk factors, in Chinese, for the inspectors


@dataclass(frozen=True, slots=True)
class SampledSite:
    site: Site
    risk: Risk

    def json(self) -> dict[str, Any]:
        s = self.site
        return {"site": s.id, "name": s.name, "city": s.city, "county": s.county, "category": s.category,
                "risk": self.risk.score, "reasons": list(self.risk.reasons)}


@dataclass(frozen=True, slots=True)
class Sample:
    """A drawn sample and the quotas it meets."""

    level: Level
    city: str | None  # the city for level city, None for province
    seed: int
    institutions: int  # institutions in scope (the city's, or the province's)
    counties: int  # counties in scope
    counties_required: int  # city: ceil(counties / 2); province: 0 (no county quota)
    sites_required: int  # the plan's share: city ceil(10 %), province ceil(5 %)
    covered: tuple[tuple[str, str], ...]  # (city, county) with at least one sampled site, sorted
    sites: tuple[SampledSite, ...]  # sorted by city, county, site id
    allocation: Mapping[str, int] = field(default_factory=dict)  # sites per city

    def json(self) -> dict[str, Any]:
        return {
            "level": str(self.level),
            "city": self.city,
            "seed": self.seed,
            "institutions": self.institutions,
            "counties": self.counties,
            "counties_required": self.counties_required,
            "counties_covered": len(self.covered),
            "sites_required": self.sites_required,
            "sampled": len(self.sites),
            "allocation": dict(self.allocation),
            "covered": [{"city": c, "county": k} for c, k in self.covered],
            "sites": [s.json() for s in self.sites],
        }


# --- risk ---------------------------------------------------------------------------------------


def is_high_risk_category(category: str, categories: Iterable[str] = HIGH_RISK_CATEGORIES) -> bool:
    text = category.casefold()
    return bool(text) and any(word.casefold() in text for word in categories)


def risk_of(site: Site, inputs: RiskInputs | None = None, *, weights: RiskWeights = DEFAULT_WEIGHTS) -> Risk:
    """The site's risk score (the sampling weight) and the reasons to show inspectors."""
    inputs = inputs or RiskInputs()
    score = weights.base
    reasons: list[str] = []
    alerts = inputs.open_critical + inputs.open_major + inputs.open_minor
    if alerts:
        points = (weights.critical * inputs.open_critical + weights.major * inputs.open_major
                  + weights.minor * inputs.open_minor)
        score += min(points, weights.alerts_cap)
        parts = [f"{label} {n}" for label, n in (("严重", inputs.open_critical), ("较重", inputs.open_major),
                                                  ("一般", inputs.open_minor)) if n]
        reasons.append(f"未处理告警 {alerts} 条（{'、'.join(parts)}）")
    expected = max(inputs.cameras_required, inputs.cameras)
    if expected:
        online = min(max(inputs.cameras_online, 0), expected)
        if online < expected:
            score += weights.cameras_offline * (1 - online / expected)
            reasons.append(f"摄像头在线 {online}/{expected}")
    if is_high_risk_category(site.category, weights.high_risk_categories):
        score += weights.high_risk_category
        reasons.append(f"高风险类别（{site.category}）")
    if not reasons:
        reasons.append("无突出风险（随机抽取）")
    return Risk(score=round(score, 6), reasons=tuple(reasons))


# --- sampling -----------------------------------------------------------------------------------


def ceil_share(n: int, denominator: int) -> int:
    """ceil(n / denominator) in integers (0.1 * 30 is 3.0000000000000004 in floats)."""
    return -(-n // denominator)


def uniform(seed: int, site_id: str) -> float:
    """A uniform number in (0, 1), fixed by (seed, site id), the same on every platform and run."""
    digest = hashlib.blake2b(f"{seed}\x1f{site_id}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0**64


def es_key(seed: int, site_id: str, weight: float) -> float:
    """Efraimidis-Spirakis key ``u ** (1 / weight)`` as its logarithm (no underflow); larger wins."""
    return math.log(uniform(seed, site_id)) / weight


def draw_sample(
    sites: Iterable[Site],
    risks: Mapping[str, Risk] | None = None,
    *,
    level: Level | str,
    seed: int,
    city: str | None = None,
    weights: RiskWeights = DEFAULT_WEIGHTS,
) -> Sample:
    """Draw the plan's spot-check sample for ``city`` (level city) or the whole province.

    ``risks`` maps site id to its :class:`Risk`; a site missing from it gets ``risk_of(site)``
    (its category alone). Same inputs and seed, in any order, give the same sample.
    """
    try:
        level = Level(level)
    except ValueError:
        raise SamplingError(f"level must be 'city' or 'province', got {level!r}") from None
    registry = _registry(sites)
    risk_by_id = {s.id: _checked_risk(s, risks, weights) for s in registry}
    keys = {s.id: es_key(seed, s.id, risk_by_id[s.id].score) for s in registry}
    allocation: dict[str, int] = {}
    if level is Level.CITY:
        if not city:
            raise SamplingError("level city needs a city")
        scope = [s for s in registry if s.city == city]
        if not scope:
            known = sorted({s.city for s in registry})
            hint = f"; cities with sites: {', '.join(known)}" if known else "; the registry is empty"
            raise SamplingError(f"city {city!r} has no registered sites{hint}")
        county_count = len({s.county for s in scope})
        counties_required = (county_count + 1) // 2
        sites_required = ceil_share(len(scope), 10)
        chosen = _city_sample(scope, keys, counties_required=counties_required,
                              size=max(sites_required, counties_required))
        allocation = {city: len(chosen)}
    else:
        if city:
            raise SamplingError("level province takes no city")
        scope = registry
        if not scope:
            raise SamplingError("the registry has no sites")
        county_count = len({(s.city, s.county) for s in scope})
        counties_required = 0
        sites_required = ceil_share(len(scope), 20)
        allocation = province_allocation(scope, keys, sites_required)
        chosen = []
        for name, count in allocation.items():
            chosen += _spread(_by_key([s for s in scope if s.city == name], keys), keys, count)
    picked = sorted(chosen, key=lambda s: (s.city, s.county, s.id))
    return Sample(
        level=level,
        city=city if level is Level.CITY else None,
        seed=seed,
        institutions=len(scope),
        counties=county_count,
        counties_required=counties_required,
        sites_required=sites_required,
        covered=tuple(sorted({(s.city, s.county) for s in picked})),
        sites=tuple(SampledSite(s, risk_by_id[s.id]) for s in picked),
        allocation=allocation,
    )


def _registry(sites: Iterable[Site]) -> list[Site]:
    registry = sorted(sites, key=lambda s: s.id)
    for a, b in itertools.pairwise(registry):
        if a.id == b.id:
            raise SamplingError(f"site {a.id!r} appears twice in the registry")
    return registry


def _checked_risk(site: Site, risks: Mapping[str, Risk] | None, weights: RiskWeights) -> Risk:
    risk = risks.get(site.id) if risks is not None else None
    if risk is None:
        return risk_of(site, weights=weights)
    if not (math.isfinite(risk.score) and risk.score > 0):
        raise SamplingError(f"site {site.id!r}: risk score must be a positive number, got {risk.score!r}")
    return risk


def _by_key(sites: Iterable[Site], keys: Mapping[str, float]) -> list[Site]:
    return sorted(sites, key=lambda s: (-keys[s.id], s.id))


def _groups(sites: Sequence[Site], keys: Mapping[str, float], group: str) -> list[list[Site]]:
    """Sites grouped by ``group`` ("county" or "city"), each group in key order, groups by best key."""
    by: dict[str, list[Site]] = {}
    for s in _by_key(sites, keys):
        by.setdefault(getattr(s, group), []).append(s)
    return list(by.values())  # dicts keep insertion order: the group of the best key comes first


def _city_sample(scope: Sequence[Site], keys: Mapping[str, float], *, counties_required: int,
                 size: int) -> list[Site]:
    """``size`` sites from the best-keyed counties: ``counties_required`` of them, more only when
    those hold fewer than ``size`` sites; one site from each covered county, then the best keys."""
    counties = _groups(scope, keys, "county")
    covered = counties[:counties_required]
    while sum(len(c) for c in covered) < size:
        covered.append(counties[len(covered)])
    chosen = [c[0] for c in covered]  # len(covered) <= size: see docs/inspection.md
    rest = _by_key((s for c in covered for s in c[1:]), keys)
    return chosen + rest[: size - len(chosen)]


def _spread(city_sites: Sequence[Site], keys: Mapping[str, float], count: int) -> list[Site]:
    """``count`` sites of one city: the best site of as many counties as possible, then the best keys."""
    counties = _groups(city_sites, keys, "county")
    chosen = [c[0] for c in counties[:count]]
    rest = _by_key((s for s in city_sites if s not in chosen), keys)
    return chosen + rest[: count - len(chosen)]


def province_allocation(scope: Sequence[Site], keys: Mapping[str, float], total: int) -> dict[str, int]:
    """Sites per city for a province sample of ``total``.

    When ``total`` is at least the number of cities, every city gets one and the rest is shared in
    proportion to each city's remaining institutions (size - 1) by largest remainder, ties to the
    better-keyed city; no city is asked for more than it has. When ``total`` is smaller, the
    ``total`` cities with the best keys (weighted by total risk) get one each.
    """
    cities = _groups(scope, keys, "city")
    rank = {c[0].city: i for i, c in enumerate(cities)}
    if total < len(cities):
        return {c[0].city: 1 for c in cities[:total]}
    extra = total - len(cities)
    spare = {c[0].city: len(c) - 1 for c in cities}
    spare_total = sum(spare.values())
    alloc = dict.fromkeys(spare, 1)
    if extra and spare_total:
        floors = {name: extra * n // spare_total for name, n in spare.items()}
        remainders = {name: extra * n % spare_total for name, n in spare.items()}
        for name, f in floors.items():
            alloc[name] += f
        left = extra - sum(floors.values())
        for name in sorted(spare, key=lambda c: (-remainders[c], rank[c]))[:left]:
            alloc[name] += 1
    return alloc


# --- inspection list ----------------------------------------------------------------------------


def inspection_rows(sample: Sample) -> list[list[str]]:
    """The inspection list: the header (:data:`CSV_HEADER`), then one row per sampled site."""
    rows = [list(CSV_HEADER)]
    for i, entry in enumerate(sample.sites, start=1):
        s = entry.site
        rows.append([str(i), s.id, guard(s.name), guard(s.city), guard(s.county), guard(s.category),
                     f"{entry.risk.score:.1f}", guard("；".join(entry.risk.reasons))])
    return rows


def inspection_csv(sample: Sample) -> bytes:
    """The inspection list as CSV in UTF-8 with a BOM (so Excel reads the Chinese), CRLF line ends."""
    header, *rows = inspection_rows(sample)
    return to_csv(header, rows)


def write_inspection_csv(sample: Sample, path: Path) -> None:
    path.write_bytes(inspection_csv(sample))
