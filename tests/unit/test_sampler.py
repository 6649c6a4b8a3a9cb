"""The spot-check sampler: the plan's rules over many random registries (hypothesis), reproducibility,
risk weighting measured over a fixed set of seeds, the risk score, edge cases and the CSV."""

# ruff: noqa: RUF001 - the expected texts use Chinese full-width punctuation
from __future__ import annotations

import csv
import io
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.inspection.sampler import (
    CSV_HEADER,
    Level,
    Risk,
    RiskInputs,
    Sample,
    SamplingError,
    Site,
    ceil_share,
    draw_sample,
    es_key,
    inspection_csv,
    inspection_rows,
    is_high_risk_category,
    risk_of,
    uniform,
)

PROPERTY = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = range(2000)  # the statistical tests are deterministic: a fixed set of seeds


@dataclass
class Registry:
    sites: list[Site]
    risks: dict[str, Risk]

    def cities(self) -> list[str]:
        return sorted({s.city for s in self.sites})

    def of(self, city: str) -> list[Site]:
        return [s for s in self.sites if s.city == city]


@st.composite
def registries(draw: st.DrawFn, max_cities: int = 4) -> Registry:
    """Random cities, counties (names reused across cities), sizes from 1 to 30 per county, risks
    from 0.05 to 50 (some all equal), ids in random order."""
    rnd = draw(st.randoms(use_true_random=False))
    sites: list[Site] = []
    risks: dict[str, Risk] = {}
    flat = draw(st.booleans())
    for c in range(draw(st.integers(1, max_cities))):
        for k in range(draw(st.integers(1, 9))):
            for _ in range(draw(st.integers(1, 30))):
                site_id = f"s{len(sites):04d}-{rnd.randrange(10**6)}"
                sites.append(Site(site_id, f"市{c}", f"县{k}", rnd.choice(["舞蹈", "数学", "sports", ""])))
                risks[site_id] = Risk(1.0 if flat else rnd.uniform(0.05, 50.0), ("r",))
    rnd.shuffle(sites)
    return Registry(sites, risks)


def ids(sample: Sample) -> list[str]:
    return [entry.site.id for entry in sample.sites]


def check_common(sample: Sample, scope: list[Site]) -> None:
    picked = [entry.site for entry in sample.sites]
    assert len({s.id for s in picked}) == len(picked), "a site sampled twice"
    assert {s.id for s in picked} <= {s.id for s in scope}
    assert picked == sorted(picked, key=lambda s: (s.city, s.county, s.id)), "output not sorted"
    assert sample.covered == tuple(sorted({(s.city, s.county) for s in picked}))
    assert sample.institutions == len(scope)


# --- the rules, over random registries ------------------------------------------------------------


@PROPERTY
@given(registries(), st.integers(0, 2**63), st.data())
def test_city_sample_meets_the_plan(registry: Registry, seed: int, data: st.DataObject) -> None:
    city = data.draw(st.sampled_from(registry.cities()))
    scope = registry.of(city)
    sample = draw_sample(registry.sites, registry.risks, level="city", city=city, seed=seed)
    check_common(sample, scope)
    n, counties = len(scope), len({s.county for s in scope})
    assert sample.level is Level.CITY
    assert sample.city == city
    assert sample.counties == counties
    assert sample.counties_required == math.ceil(counties / 2)
    assert sample.sites_required == math.ceil(n / 10 - 1e-9)
    assert len(sample.covered) >= math.ceil(counties / 2), "fewer than half of the counties"
    assert len(sample.sites) >= math.ceil(n / 10 - 1e-9), "fewer than 10 % of the institutions"
    # No more than needed: exactly the larger of the two quotas.
    assert len(sample.sites) == max(sample.sites_required, sample.counties_required)
    per_county = Counter(entry.site.county for entry in sample.sites)
    assert all(per_county[county] >= 1 for _, county in sample.covered)
    assert sample.allocation == {city: len(sample.sites)}


@PROPERTY
@given(registries(), st.integers(0, 2**63))
def test_province_sample_meets_the_plan(registry: Registry, seed: int) -> None:
    sample = draw_sample(registry.sites, registry.risks, level="province", seed=seed)
    check_common(sample, registry.sites)
    n = len(registry.sites)
    sizes = Counter(s.city for s in registry.sites)
    assert sample.city is None
    assert sample.counties_required == 0
    assert sample.counties == len({(s.city, s.county) for s in registry.sites})
    assert sample.sites_required == math.ceil(n / 20 - 1e-9)
    assert len(sample.sites) == sample.sites_required, "not 5 % of the institutions"
    per_city = Counter(entry.site.city for entry in sample.sites)
    assert dict(per_city) == {c: k for c, k in sample.allocation.items() if k}
    assert sum(sample.allocation.values()) == len(sample.sites)
    assert all(per_city[c] <= sizes[c] for c in sizes)
    quota, cities = len(sample.sites), len(sizes)
    if quota >= cities:
        assert set(per_city) == set(sizes), "a city without a sampled site though the quota allowed one each"
        # One per city, the rest in proportion to each city's other institutions (within one site).
        spare = n - cities
        for c, size in sizes.items():
            fair = 1 + ((quota - cities) * (size - 1) / spare if spare else 0)
            assert abs(per_city[c] - fair) < 1
    else:
        assert len(per_city) == quota
        assert all(k == 1 for k in per_city.values())
    # Within a city, counties are spread: a county gets a second site only once all have one.
    for c, k in per_city.items():
        city_counties = {s.county for s in registry.sites if s.city == c}
        covered = {county for city, county in sample.covered if city == c}
        assert len(covered) == min(k, len(city_counties))


@PROPERTY
@given(registries(max_cities=2), st.integers(0, 2**63), st.sampled_from(["city", "province"]), st.randoms())
def test_same_input_and_seed_same_sample_in_any_order(registry: Registry, seed: int, level: str,
                                                      rnd: random.Random) -> None:
    city = registry.cities()[0] if level == "city" else None
    first = draw_sample(registry.sites, registry.risks, level=level, city=city, seed=seed)
    shuffled = list(registry.sites)
    rnd.shuffle(shuffled)
    again = draw_sample(shuffled, dict(reversed(registry.risks.items())), level=level, city=city, seed=seed)
    assert again == first
    assert again.json() == first.json()
    assert inspection_csv(again) == inspection_csv(first)


def test_different_seeds_give_different_samples() -> None:
    sites = [Site(f"s{i:03d}", "A", f"k{i % 6}") for i in range(200)]
    samples = {tuple(ids(draw_sample(sites, level="city", city="A", seed=seed))) for seed in range(20)}
    assert len(samples) == 20


def test_a_site_key_depends_only_on_seed_and_id() -> None:
    # Pinned: a changed key derivation would silently change every published sample for a seed.
    assert uniform(0, "a") == pytest.approx(uniform(0, "a"))
    assert 0 < uniform(0, "a") < 1
    assert uniform(1, "a") != uniform(0, "a") != uniform(0, "b")
    assert es_key(42, "demo-hz-001", 2.0) == pytest.approx(math.log(uniform(42, "demo-hz-001")) / 2.0)
    assert uniform(42, "demo-hz-001") == pytest.approx(0.8154548678906309, abs=1e-12)


# --- risk weighting, over a fixed set of seeds ----------------------------------------------------


def test_one_draw_picks_each_site_in_proportion_to_its_risk() -> None:
    """One county, ten sites, quota 1: the exact ES probability is risk / total risk."""
    sites = [Site(f"s{i}", "A", "k") for i in range(10)]
    risks = {s.id: Risk(5.0 if s.id == "s0" else 1.0, ()) for s in sites}
    counts = Counter(ids(draw_sample(sites, risks, level="city", city="A", seed=seed))[0] for seed in SEEDS)
    assert counts["s0"] / len(SEEDS) == pytest.approx(5 / 14, abs=0.04)
    for i in range(1, 10):
        assert counts[f"s{i}"] / len(SEEDS) == pytest.approx(1 / 14, abs=0.03)


def _inclusion(sample_of: Callable[[int], Sample], seeds: range) -> Counter[str]:
    counts: Counter[str] = Counter()
    for seed in seeds:
        counts.update(ids(sample_of(seed)))
    return counts


def test_higher_risk_sites_are_sampled_more_often_but_not_always() -> None:
    sites = [Site(f"s{i:02d}", "A", f"k{i % 4}") for i in range(60)]
    risky = {f"s{i:02d}" for i in (1, 7, 22, 38, 50)}  # spread over the counties
    risks = {s.id: Risk(10.0 if s.id in risky else 1.0, ()) for s in sites}
    seeds = range(600)
    counts = _inclusion(lambda seed: draw_sample(sites, risks, level="city", city="A", seed=seed), seeds)
    low = [counts[s.id] / len(seeds) for s in sites if s.id not in risky]
    high = [counts[s] / len(seeds) for s in risky]
    # Quota 6 of 60: a low-risk site is in 4 to 12 % of samples (more in a county without a risky
    # site, whose best site goes in whenever the county is drawn), a high-risk one in 37 to 53 %.
    assert min(high) > 2 * max(low)
    assert sum(high) / len(high) > 5 * sum(low) / len(low)
    assert max(high) < 0.9, "risk must make inspection likelier, not certain"
    assert min(low) > 0, "every site must keep a chance"


def test_province_sample_favours_risk_within_each_city() -> None:
    sites = [Site(f"{c}{i:02d}", c, f"k{i % 3}") for c in "AB" for i in range(40)]
    risks = {s.id: Risk(8.0 if s.id in {"A05", "B17"} else 1.0, ()) for s in sites}
    seeds = range(600)
    counts = _inclusion(lambda seed: draw_sample(sites, risks, level="province", seed=seed), seeds)
    low = max(counts[s.id] for s in sites if s.id not in {"A05", "B17"})
    assert min(counts["A05"], counts["B17"]) > 2 * low


def test_county_choice_is_weighted_by_total_risk() -> None:
    # Two counties, one site each: quota 1, the county (and site) with risk 9 wins about 90 % of draws.
    sites = [Site("a", "A", "k1"), Site("b", "A", "k2")]
    risks = {"a": Risk(9.0, ()), "b": Risk(1.0, ())}
    counts = Counter(ids(draw_sample(sites, risks, level="city", city="A", seed=seed))[0] for seed in SEEDS)
    assert counts["a"] / len(SEEDS) == pytest.approx(0.9, abs=0.03)


# --- edge cases -----------------------------------------------------------------------------------


def test_city_without_sites_is_a_clear_error() -> None:
    sites = [Site("a", "杭州市", "西湖区"), Site("b", "宁波市", "鄞州区")]
    with pytest.raises(SamplingError, match=r"'温州市' has no registered sites; cities with sites: 宁波市, 杭州市"):
        draw_sample(sites, level="city", city="温州市", seed=1)
    with pytest.raises(SamplingError, match="the registry is empty"):
        draw_sample([], level="city", city="温州市", seed=1)
    with pytest.raises(SamplingError, match="no sites"):
        draw_sample([], level="province", seed=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": "city"}, "needs a city"),
        ({"level": "province", "city": "A"}, "takes no city"),
        ({"level": "county", "city": "A"}, "level must be"),
    ],
)
def test_bad_level_and_city(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(SamplingError, match=message):
        draw_sample([Site("a", "A", "k")], seed=1, **kwargs)  # type: ignore[arg-type]


def test_duplicate_ids_and_bad_risks_are_refused() -> None:
    with pytest.raises(SamplingError, match="appears twice"):
        draw_sample([Site("a", "A", "k"), Site("a", "A", "j")], level="city", city="A", seed=1)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(SamplingError, match="positive"):
            draw_sample([Site("a", "A", "k")], {"a": Risk(bad, ())}, level="city", city="A", seed=1)


def test_one_site_one_county() -> None:
    sample = draw_sample([Site("a", "A", "k"), Site("x", "B", "j")], level="city", city="A", seed=3)
    assert ids(sample) == ["a"]
    assert (sample.counties, sample.counties_required, sample.sites_required) == (1, 1, 1)


def test_one_county_takes_ten_percent_rounded_up() -> None:
    for n, quota in ((1, 1), (9, 1), (10, 1), (11, 2), (30, 3), (31, 4), (100, 10)):
        sites = [Site(f"s{i:03d}", "A", "k") for i in range(n)]
        sample = draw_sample(sites, level="city", city="A", seed=n)
        assert len(sample.sites) == quota, n
        assert sample.covered == (("A", "k"),)


def test_counties_quota_beats_ten_percent_when_larger() -> None:
    # Five counties of two sites: 10 % is 1, but 3 counties must be covered, so 3 sites.
    sites = [Site(f"s{i}", "A", f"k{i % 5}") for i in range(10)]
    sample = draw_sample(sites, level="city", city="A", seed=0)
    assert (sample.counties_required, sample.sites_required, len(sample.sites), len(sample.covered)) == (3, 1, 3, 3)


def test_small_counties_are_topped_up_with_another_county() -> None:
    # Two counties: "tiny" has 1 site, "big" 50. Quota: 1 county, 6 sites. When "tiny" is drawn
    # first it cannot hold 6 sites, so "big" is covered too; otherwise "big" alone is enough.
    sites = [Site("t0", "A", "tiny")] + [Site(f"b{i:02d}", "A", "big") for i in range(50)]
    risks = {s.id: Risk(100.0 if s.id == "t0" else 1.0, ()) for s in sites}
    covered_counts: Counter[int] = Counter()
    for seed in range(60):
        sample = draw_sample(sites, risks, level="city", city="A", seed=seed)
        assert len(sample.sites) == 6
        covered_counts[len(sample.covered)] += 1
        if "t0" not in ids(sample):
            assert sample.covered == (("A", "big"),)
    assert covered_counts[1] > 0
    assert covered_counts[2] > 0


def test_fewer_sites_than_a_quota_of_counties() -> None:
    # Three counties with one site each: two counties to cover, two sites, whatever the seed.
    sites = [Site(f"s{i}", "A", f"k{i}") for i in range(3)]
    for seed in range(20):
        sample = draw_sample(sites, level="city", city="A", seed=seed)
        assert len(sample.sites) == 2
        assert len(sample.covered) == 2


def test_province_quota_and_allocation() -> None:
    # 21 institutions: 5 % is 1.05, so 2 sites; three cities, so only the two best-keyed cities.
    sites = [Site(f"a{i:02d}", "A", "k") for i in range(15)] + [Site(f"b{i}", "B", "k") for i in range(5)]
    sites.append(Site("c0", "C", "k"))
    sample = draw_sample(sites, level="province", seed=5)
    assert sample.sites_required == 2
    assert len(sample.sites) == 2
    assert sorted(sample.allocation.values()) == [1, 1]
    assert len(sample.allocation) == 2
    # 100 institutions over 3 cities (70/20/10): 5 sites, one each, then 2 shared by the other
    # institutions (69/19/9 of 97: 1.42, 0.39, 0.19): 1 to A by floor, 1 by largest remainder (A's .42).
    sites = ([Site(f"a{i:02d}", "A", f"k{i % 4}") for i in range(70)] + [Site(f"b{i:02d}", "B", "k") for i in range(20)]
             + [Site(f"c{i}", "C", "k") for i in range(10)])
    sample = draw_sample(sites, level="province", seed=5)
    assert dict(sorted(sample.allocation.items())) == {"A": 3, "B": 1, "C": 1}
    a_counties = {county for city, county in sample.covered if city == "A"}
    assert len(a_counties) == 3, "three sites of city A go to three different counties"


def test_missing_risk_falls_back_to_the_category() -> None:
    sites = [Site("a", "A", "k", "舞蹈"), Site("b", "A", "k", "数学")]
    sample = draw_sample(sites, level="city", city="A", seed=1)
    (entry,) = sample.sites
    assert entry.risk == risk_of(entry.site)


# --- the risk score -------------------------------------------------------------------------------


def test_risk_of_a_quiet_site() -> None:
    assert risk_of(Site("a", "A", "k", "数学")) == Risk(1.0, ("无突出风险（随机抽取）",))
    assert risk_of(Site("a", "A", "k"), RiskInputs(cameras_required=2, cameras=2, cameras_online=2)).score == 1.0


def test_risk_of_alerts_cameras_and_category() -> None:
    inputs = RiskInputs(open_critical=1, open_major=1, cameras_required=3, cameras=2, cameras_online=1)
    risk = risk_of(Site("a", "A", "k", "少儿舞蹈"), inputs)
    # 1 + (3 + 2) alerts + 4 x (1 - 1/3) cameras + 2 category
    assert risk.score == pytest.approx(1 + 5 + 8 / 3 + 2, abs=1e-6)
    assert risk.reasons == ("未处理告警 2 条（严重 1、较重 1）", "摄像头在线 1/3", "高风险类别（少儿舞蹈）")


def test_alert_points_are_capped() -> None:
    risk = risk_of(Site("a", "A", "k"), RiskInputs(open_critical=10, open_minor=3))
    assert risk.score == 1 + 8
    assert risk.reasons == ("未处理告警 13 条（严重 10、一般 3）",)


def test_more_cameras_than_required_count_all_of_them() -> None:
    risk = risk_of(Site("a", "A", "k"), RiskInputs(cameras_required=1, cameras=4, cameras_online=3))
    assert risk.score == pytest.approx(2.0)
    assert risk.reasons == ("摄像头在线 3/4",)


@pytest.mark.parametrize(
    ("category", "high"),
    [("体育", True), ("舞蹈培训", True), ("户外拓展", True), ("Sports", True), ("Dance", True),
     ("outdoor training", True), ("数学", False), ("arts", False), ("", False)],
)
def test_high_risk_categories(category: str, high: bool) -> None:
    assert is_high_risk_category(category) is high


def test_ceil_share_is_exact() -> None:
    assert [ceil_share(n, 10) for n in (0, 1, 10, 11, 30, 31)] == [0, 1, 1, 2, 3, 4]
    assert [ceil_share(n, 20) for n in (1, 20, 21, 40, 60)] == [1, 1, 2, 2, 3]


# --- the inspection list --------------------------------------------------------------------------


def test_inspection_csv_is_utf8_with_bom_and_chinese_headers() -> None:
    sites = [Site("hz-1", "杭州市", "西湖区", "舞蹈", "=HYPERLINK(\"x\")"),
             Site("hz-2", "杭州市", "西湖区", "数学", "乙")]
    risks = {"hz-1": Risk(3.0, ("高风险类别（舞蹈）",)), "hz-2": Risk(1.0, ("无突出风险（随机抽取）",))}
    sample = draw_sample(sites, risks, level="city", city="杭州市", seed=0)
    data = inspection_csv(sample)
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert rows == inspection_rows(sample)
    assert tuple(rows[0]) == CSV_HEADER
    assert len(rows) == 2
    expected = {
        "hz-1": ["1", "hz-1", "'=HYPERLINK(\"x\")", "杭州市", "西湖区", "舞蹈", "3.0", "高风险类别（舞蹈）"],
        "hz-2": ["1", "hz-2", "乙", "杭州市", "西湖区", "数学", "1.0", "无突出风险（随机抽取）"],
    }
    assert rows[1] == expected[rows[1][1]]
