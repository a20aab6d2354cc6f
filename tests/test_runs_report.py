"""The run-over-run monitor: stage `monitor` (quarantine per rule, data-quality index, feature profile, PSI
drift), the run history that outlives pruning, and the runs page rendered in headless Chromium.

The workspace is real and built twice: first cut at AS_OF (dbt holds the later events back), then with all
of its data, so the second run's features really drift from the first's, and a third run on the same build
measures none.
"""

from __future__ import annotations

import copy
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from scoring.pipeline.run_folder import RunFolder, prune
from scoring.pipeline.stages import STAGES, run_stage
from scoring.reports import drift, history, quality_index, runs
from scoring.reports.monitor import reference_profile
from scoring.settings import Settings
from scoring.warehouse import tables
from tests.conftest import tiny_settings
from tests.test_report import _headless

AS_OF = "2026-10-01"  # a month before the tiny demo shop's last day


# ----- PSI and profiles (pure) -----------------------------------------------------------------------------


def test_psi_of_a_feature_against_itself_is_zero() -> None:
    x = np.random.default_rng(0).lognormal(size=5_000)
    reference = drift.profile(x, bins=10)
    assert len(reference["cuts"]) == 9 and sum(reference["counts"]) == 5_000
    assert drift.psi(reference["counts"], drift.bin_counts(x, reference["cuts"])) == 0.0
    assert drift.compare({"f": reference}, {"f": x}, alert_psi=0.2) == {"f": {"psi": 0.0, "alert": False}}


def test_a_shifted_feature_is_an_alert_and_a_nudged_one_is_not() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=5_000)
    reference = {"f": drift.profile(x, bins=10)}
    shifted = drift.compare(reference, {"f": rng.normal(loc=1.0, size=5_000)}, alert_psi=0.2)["f"]
    nudged = drift.compare(reference, {"f": rng.normal(loc=0.02, size=5_000)}, alert_psi=0.2)["f"]
    assert shifted["psi"] > 0.2 and shifted["alert"]
    assert nudged["psi"] < 0.2 and not nudged["alert"]


def test_profiles_merge_tied_cuts_and_count_nulls_as_a_bin() -> None:
    counts = np.array([1.0] * 60 + [2.0] * 30 + [3.0] * 10)
    profile = drift.profile(counts, bins=10)
    assert profile["cuts"] == sorted(set(profile["cuts"])) and len(profile["cuts"]) < 9  # ties merged
    assert profile["counts"][-1] == 0 and sum(profile["counts"]) == 100
    with_nulls = np.concatenate([counts, np.full(40, np.nan)])
    assert drift.bin_counts(with_nulls, profile["cuts"])[-1] == 40
    # The same values with 29% of them now missing: the null rate alone drifts.
    assert drift.compare({"f": profile}, {"f": with_nulls}, alert_psi=0.2)["f"]["alert"]


def test_new_and_gone_features_are_named_not_scored() -> None:
    x = np.arange(100.0)
    out = drift.compare({"old": drift.profile(x, 10)}, {"new": x}, alert_psi=0.2)
    assert out["new"] == {"psi": None, "alert": False, "note": "not in the reference run"}
    assert out["old"]["psi"] is None and out["old"]["alert"]


# ----- data-quality index rules (pure) ---------------------------------------------------------------------


def test_a_test_costs_nothing_passing_at_least_half_failing_and_all_when_it_could_not_run() -> None:
    assert quality_index.penalty("pass", 0, 100) == 0.0
    assert quality_index.penalty("warn", 1, 100) == pytest.approx(0.505)
    assert quality_index.penalty("fail", 500, 100) == 1.0
    assert quality_index.penalty("error", 0, None) == 1.0
    assert quality_index.penalty("skipped", 0, None) == 1.0


def test_index_is_100_minus_the_mean_penalty_and_none_without_tests() -> None:
    results = [
        {"test": "a", "dimension": "validity", "status": "pass", "failures": 0, "penalty": 0.0},
        {"test": "b", "dimension": "validity", "status": "warn", "failures": 10, "penalty": 0.6},
    ]
    out = quality_index.index(results)
    assert out["validity"]["index"] == 70.0 and out["validity"]["failing_tests"] == ["b"]
    assert out["privacy"] == {
        "index": None,
        "tests": 0,
        "passed": 0,
        "failed": 0,
        "failing_rows": 0,
        "failing_tests": [],
    }


# ----- the monitor on real runs ----------------------------------------------------------------------------


def _monitored_run(settings: Settings) -> RunFolder:
    """One run folder through stage `monitor`, promoted and written to the history, as the job does."""
    run = RunFolder.create(settings.runs_dir, settings.model_dump(mode="json"))
    run_stage(settings, run, "monitor")
    run.promote(settings.runs_dir)
    history.append(settings, run.manifest)
    return run


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Three monitored runs: on a build cut at AS_OF, then twice on a build of all the data."""
    from scoring.ingest.prepare import prepare_raw
    from scoring.pipeline.build import build_features

    early = tiny_settings(tmp_path_factory.mktemp("monitored"), as_of=AS_OF)
    prepare_raw(early)
    build_features(early)
    _monitored_run(early)
    full = early.model_copy(update={"as_of": None})
    build_features(full)
    _monitored_run(full)
    time.sleep(1.1)  # run ids are stamped to the second
    _monitored_run(full)
    return full


def test_the_monitor_runs_after_validate_and_before_publishing() -> None:
    names = list(STAGES)
    assert names.index("validate") < names.index("monitor") < names.index("publish")
    if "gate" in names:
        assert names.index("monitor") < names.index("gate")


def test_monitor_records_quarantine_quality_profile_and_drift(monitored: Settings) -> None:
    first, second, third = (entry["monitor"] for entry in history.read(monitored))
    ids = [entry["run_id"] for entry in history.read(monitored)]
    # Quarantine per rule: every rule of the catalogue, as the live warehouse counts them.
    live = tables.read(monitored, "select rule_code, count(*) as n from fct_quarantine_rules group by 1")
    assert {k: v for k, v in third["quarantine"].items() if v} == dict(
        zip(live.rule_code, live.n, strict=True)
    )
    assert len(third["quarantine"]) == int(
        tables.read(monitored, "select count(*) from governance.rules").iloc[0, 0]
    )
    assert first["quarantine"]["after_as_of"] > 0 and third["quarantine"]["after_as_of"] == 0
    # The index: eight dimensions, every data test of the build placed in one.
    quality = third["quality"]
    assert set(quality["dimensions"]) == set(quality_index.DIMENSIONS) and quality["unmapped_tests"] == []
    assert all(0 <= d["index"] <= 100 and d["tests"] > 0 for d in quality["dimensions"].values())
    assert sum(d["tests"] for d in quality["dimensions"].values()) == quality["tests"] > 100
    # Profile: every numeric feature of the Feast marts, binned.
    assert {"user_stats:orders_count", "item_stats:units_30d", "user_item_stats:last_bought_at"} <= set(
        third["profile"]
    )
    # Drift: none before a promoted run; the cut build drifts; the same build twice does not.
    assert first["reference_run"] is None and first["drift"] == {}
    assert (second["reference_run"], third["reference_run"]) == (ids[0], ids[1])
    assert second["drift_alerts"], "a month more of data must move some feature past the alert"
    assert all(d["psi"] == 0.0 for d in third["drift"].values()) and third["drift_alerts"] == []


def test_a_failing_test_lowers_its_dimension_and_no_other(monitored: Settings) -> None:
    """On the live build's own dbt artifacts: one passing uniqueness test marked failed."""
    target = monitored.dbt_target_dir
    run_results = json.loads((target / "run_results.json").read_text())
    manifest = json.loads((target / "manifest.json").read_text())

    def scored(results: dict) -> dict[str, float]:
        rows = quality_index.test_results(results, manifest, rows_of=lambda relation: 1_000)
        return {d: v["index"] for d, v in quality_index.index(rows).items()}

    before = scored(run_results)
    broken = copy.deepcopy(run_results)
    victim = next(
        r
        for r in broken["results"]
        if r["unique_id"].startswith("test.")
        and r["status"] == "pass"
        and quality_index.dimension_of(manifest["nodes"][r["unique_id"]]) == "uniqueness"
    )
    victim.update(status="warn", failures=10)
    after = scored(broken)
    assert after["uniqueness"] < before["uniqueness"]
    assert {d: v for d, v in after.items() if d != "uniqueness"} == {
        d: v for d, v in before.items() if d != "uniqueness"
    }
    victim.update(status="error")
    assert scored(broken)["uniqueness"] < after["uniqueness"]


@pytest.fixture(scope="module")
def pruned(monitored: Settings) -> Settings:
    """The workspace after retention deleted every run folder but the current one."""
    prune(monitored.runs_dir, keep=1, protect=monitored.runs_dir / "current")
    return monitored


def test_history_outlives_pruning_and_still_gives_the_drift_reference(pruned: Settings) -> None:
    folders = [p for p in pruned.runs_dir.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(folders) == 1
    entries = history.read(pruned)
    assert len(entries) == 3 and len(runs.runs(pruned)) == 3
    # Rerunning the stage on the current run itself: the reference is the promoted run before it.
    assert reference_profile(pruned, entries[-1]["run_id"])[0] == entries[1]["run_id"]


@pytest.fixture(scope="module")
def page(pruned: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runs.build(pruned, tmp_path_factory.mktemp("runs") / "runs.html")


def test_runs_page_is_self_contained_and_shows_every_run(page: Path, pruned: Settings) -> None:
    text = page.read_text()
    assert not re.search(r"<script[^>]+src=", text), "every script must be inlined"
    assert text.count("Plotly.newPlot") == len(runs.TITLES)
    for entry in history.read(pruned):
        assert entry["run_id"] in text
    assert 'class="alert"' in text, "the drifted run's alerts must be highlighted"
    assert "after_as_of" in text and "completeness" in text


def test_runs_page_renders_in_headless_chromium(page: Path, chromium: str, tmp_path: Path) -> None:
    dom = _headless(chromium, tmp_path / "profile", "--dump-dom", page.as_uri()).stdout
    assert dom.count('class="main-svg"') >= len(runs.TITLES)
    rendered = {t.replace("&amp;", "&") for t in re.findall(r'class="gtitle"[^>]*>([^<]+)<', dom)}
    assert all(any(title in r for r in rendered) for title in runs.TITLES.values()), rendered
    assert 'class="trace bars"' in dom and 'class="trace scatter' in dom, "bars and lines must be drawn"
    assert 'class="hm"' in dom, "the drift heatmap must be drawn"
    shot = tmp_path / "runs.png"
    _headless(
        chromium, tmp_path / "profile", "--window-size=1400,4200", f"--screenshot={shot}", page.as_uri()
    )
    assert shot.stat().st_size > 50_000


# ----- a whole scoring run ---------------------------------------------------------------------------------


def test_a_scoring_run_records_the_monitor_and_the_page_shows_its_figures(
    scored_workspace: tuple[Settings, Path], tmp_path: Path
) -> None:
    settings, run_dir = scored_workspace
    manifest = json.loads((run_dir / "manifest.json").read_text())
    monitor = manifest["stages"]["monitor"]
    assert {"quarantine", "quality", "profile", "drift", "reference_run", "build"} <= set(monitor)
    assert monitor["quality"]["unmapped_tests"] == [] and monitor["profile"]
    # The page reads the run's folder (the fixture wrote no history): the encoder's held-out recall and
    # which encoder shipped, holdout figures and gate outcome.
    text = runs.build(settings, tmp_path / "runs.html").read_text()
    assert manifest["run_id"] in text and "holdout auc" in text
    shipped = manifest["stages"]["finetune"]["encoder"]["shipped"]
    assert "encoder recommend.recall_at_10_zero_shot" in text and f"<td>{shipped}</td>" in text
    assert f"<td>{runs.gate_outcome(history.entry(manifest))}</td>" in text
