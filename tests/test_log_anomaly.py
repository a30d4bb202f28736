"""Log anomaly primitives and the session model: pure functions, real data where we have it."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.anomaly_eval import HISTORY_WINDOWS, NgramNovelty, SyntheticStream, check_window, load_sessions
from ops_agent.tools.logs.analysis.anomaly import (
    Anomaly,
    SessionModel,
    novel_templates,
    poisson_sf_log10,
    rate_jumps,
    volume_anomalies,
)

HDFS_DIR = Path(__file__).resolve().parents[2] / "shared/data/hdfs-anomaly"


# -- volume_anomalies


def test_error_spike_is_caught_with_a_readable_explanation() -> None:
    history = {"api/error": [18, 21, 17, 19, 22, 18, 16, 20, 19, 18, 23, 17], "api/info": [900, 950, 910] * 4}
    found = volume_anomalies(history, {"api/error": 412, "api/info": 930}, window_label="5m")
    assert [(a.kind, a.key) for a in found] == [("volume_spike", "api/error")]
    spike = found[0]
    assert spike.observed == 412 and spike.expected == 18.5
    assert spike.score > 50
    assert spike.explanation.startswith("api error lines: 412 in the last 5m vs a typical 18.5 (median of 12 windows)")


def test_drop_to_zero_of_a_busy_key_is_caught_even_when_it_is_missing_from_current() -> None:
    history = {"db/info": [410, 395, 402, 388, 420, 415, 399, 405, 391, 408, 412, 400], "db/error": [3, 4, 2] * 4}
    found = volume_anomalies(history, {"db/error": 3}, window_label="5m")
    assert [(a.kind, a.key, a.observed) for a in found] == [("volume_drop", "db/info", 0.0)]
    assert "below" in found[0].explanation


def test_drop_of_a_quiet_or_bursty_key_is_not_news() -> None:
    quiet = {"db/notice": [12, 15, 9, 14, 13, 16, 11, 12, 15, 10, 14, 13]}
    assert volume_anomalies(quiet, {"db/notice": 1}, window_label="5m") == []
    bursty = {"cron/info": [0, 0, 300, 0, 0, 280, 0, 0, 310, 0, 0, 290]}  # median 0: never consistently busy
    assert volume_anomalies(bursty, {}, window_label="5m") == []


def test_low_counts_do_not_trigger() -> None:
    history = {"web/error": [0, 1, 0, 2, 1, 0, 0, 1, 0, 0, 1, 0]}
    assert volume_anomalies(history, {"web/error": 6}, window_label="5m") == []
    # A key never seen before needs min_count lines to be a spike at all.
    assert volume_anomalies(history, {"web/critical": 9}, window_label="5m") == []
    found = volume_anomalies(history, {"web/critical": 40}, window_label="5m")
    assert [(a.kind, a.key, a.expected) for a in found] == [("volume_spike", "web/critical", 0.0)]


def test_small_relative_wiggles_of_busy_keys_are_not_spikes() -> None:
    # A suspiciously steady hour (MAD 5) must not make +60% a "spike": the relative floor holds.
    history = {"api/info": [1000, 1005, 995, 1002, 998, 1000, 1003, 997, 1001, 999, 1004, 996]}
    assert volume_anomalies(history, {"api/info": 1600}, window_label="5m") == []
    assert volume_anomalies(history, {"api/info": 5000}, window_label="5m")[0].kind == "volume_spike"


def test_steady_noisy_stream_gives_no_anomalies_over_many_seeded_windows() -> None:
    windows = 0
    for seed in (101, 202, 303):
        stream = SyntheticStream(seed)
        ws = stream.windows(HISTORY_WINDOWS + 60)
        for t in range(HISTORY_WINDOWS, len(ws)):
            result = check_window(stream, ws[t - HISTORY_WINDOWS:t], ws[t].counts)
            assert not result.any, (seed, t, result)
            windows += 1
    assert windows == 180


def test_injected_faults_are_caught_in_the_noisy_stream() -> None:
    stream = SyntheticStream(7)
    ws = stream.windows(HISTORY_WINDOWS + 1)
    history, window = ws[:HISTORY_WINDOWS], ws[HISTORY_WINDOWS]
    busy = max(
        (tpl for tpl in stream.templates if tpl.severity == "error"), key=lambda tpl: window.rates[tpl.text]
    )
    counts = Counter(window.counts)
    for tpl in stream.templates:  # 5× every error line of the busiest error template's service
        if tpl.service == busy.service and tpl.severity == "error":
            counts[tpl.text] *= 5
    counts[f"{busy.service} error NEW failure <*>"] = 20
    result = check_window(stream, history, counts)
    assert ("volume_spike", f"{busy.service}/error") in {(a.kind, a.key) for a in result.volume}
    assert [a.key for a in result.novel] == [f"{busy.service} error NEW failure <*>"]
    assert busy.text in {a.key for a in result.jumps}


def test_volume_results_are_sorted_by_score() -> None:
    history = {f"svc{i}/error": [10] * 12 for i in range(4)}
    found = volume_anomalies(history, {f"svc{i}/error": 50 + 40 * i for i in range(4)}, window_label="1m")
    assert [a.key for a in found] == ["svc3/error", "svc2/error", "svc1/error", "svc0/error"]
    assert all(isinstance(a, Anomaly) and a.score >= 0 for a in found)


# -- novel_templates


def test_new_template_is_caught_and_small_ones_are_not() -> None:
    baseline = {"GET /health ok": 5000, "db timeout after <*>ms": 40}
    current = {"GET /health ok": 420, "db timeout after <*>ms": 3, "disk full on <*>": 20, "odd one <*>": 3}
    found = novel_templates(baseline, current)
    assert [(a.kind, a.key, a.observed) for a in found] == [("new_template", "disk full on <*>", 20.0)]
    assert found[0].score > 20
    assert "never in the baseline" in found[0].explanation


def test_novel_templates_sorted_by_score() -> None:
    found = novel_templates({"a": 1000}, {"a": 100, "b": 12, "c": 40, "d": 25})
    assert [a.key for a in found] == ["c", "d", "b"]


# -- rate_jumps


def test_rate_jump_is_caught_and_a_steady_rate_is_not() -> None:
    baseline = {"retrying <*>": 120, "GET /health ok": 36000}  # an hour: 10 and 3000 per 5 minutes
    steady = {"retrying <*>": 13, "GET /health ok": 3100}
    assert rate_jumps(baseline, 3600, steady, 300) == []
    jumped = {"retrying <*>": 100, "GET /health ok": 3100}
    found = rate_jumps(baseline, 3600, jumped, 300)
    assert [(a.kind, a.key) for a in found] == [("rate_jump", "retrying <*>")]
    assert found[0].expected == pytest.approx(121 / 12)
    assert "in the last 5m" in found[0].explanation and "9.9×" in found[0].explanation


def test_a_template_seen_once_in_the_baseline_does_not_explode() -> None:
    # Seen once an hour, now 6 in five minutes: few lines, so not a jump worth paging about.
    assert rate_jumps({"rare <*>": 1}, 3600, {"rare <*>": 6}, 300) == []
    # A statistically sure but modest rise (1.5×) is not a jump either.
    assert rate_jumps({"busy": 120_000}, 3600, {"busy": 15_000}, 300) == []


def test_templates_new_to_the_baseline_are_left_to_novel_templates() -> None:
    assert rate_jumps({"a": 100}, 3600, {"b": 500}, 300) == []


# -- empty inputs


def test_empty_inputs_are_fine() -> None:
    assert volume_anomalies({}, {}, window_label="5m") == []
    assert volume_anomalies({"a/error": []}, {"a/error": 100}, window_label="5m") == []  # no baseline
    assert novel_templates({}, {"x": 100}) == []  # no baseline: everything would be "new"
    assert novel_templates({"x": 10}, {}) == []
    assert rate_jumps({}, 3600, {}, 300) == []
    assert rate_jumps({"x": 1}, 0, {"x": 100}, 300) == []


def test_poisson_tail_matches_a_direct_sum_and_stays_finite_far_out() -> None:
    for k, lam in [(0, 3.0), (1, 0.5), (5, 2.0), (12, 10.0), (3, 7.5), (30, 29.0)]:
        direct = 1 - sum(math.exp(-lam) * lam**i / math.factorial(i) for i in range(k))
        assert poisson_sf_log10(k, lam) == pytest.approx(math.log10(direct), abs=1e-9)
    far = (-1 - math.lgamma(501)) / math.log(10)  # the first term dominates: 1e-1134 would underflow a float
    assert poisson_sf_log10(500, 1.0) == pytest.approx(far, abs=0.01)
    assert poisson_sf_log10(5, 0.0) == -math.inf


# -- SessionModel on hand-made sessions


def _shuffled_sessions(rng: random.Random, count: int) -> list[list[str]]:
    """open/close around k reads and k acks (n(read) == n(ack)) plus 0-2 heartbeats, in random order."""
    sessions = []
    for _ in range(count):
        k = rng.randint(1, 4)
        middle = ["read"] * k + ["ack"] * k + ["heartbeat"] * rng.randint(0, 2)
        rng.shuffle(middle)
        sessions.append(["open", *middle, "close"])
    return sessions


@pytest.fixture
def model() -> SessionModel:
    return SessionModel().fit(_shuffled_sessions(random.Random(1), 400))


def test_a_normal_session_is_not_flagged(model: SessionModel) -> None:
    verdict = model.score(["open", "read", "ack", "heartbeat", "read", "ack", "close"])
    assert not verdict.anomalous and verdict.score == 0.0
    assert verdict.reason == "no deviation from training"


def test_unseen_key_is_flagged_first_in_the_reason(model: SessionModel) -> None:
    verdict = model.score(["open", "read", "ack", 7, "close"])
    assert verdict.anomalous and verdict.score > 0
    assert verdict.reason.startswith("key 7 never seen in training")
    assert "\n" not in verdict.reason


def test_broken_count_invariant_is_flagged(model: SessionModel) -> None:
    assert any(str(inv) in ("n(ack)=n(read)", "n(read)=n(ack)") for inv in model.invariants)
    verdict = model.score(["open", "read", "ack", "read", "read", "ack", "close"])  # 3 reads, 2 acks
    assert verdict.anomalous
    assert verdict.reason.startswith("count invariant")
    assert "broken (3 vs 2)" in verdict.reason or "broken (2 vs 3)" in verdict.reason


def test_unseen_transition_is_flagged() -> None:
    # Strictly ordered workflow: every transition is seen hundreds of times, so a new one is news.
    train = [["open", "read", "close"], ["open", "write", "close"]] * 100
    model = SessionModel().fit(train)
    verdict = model.score(["open", "close"])
    assert verdict.anomalous
    assert "transition open→close never seen" in verdict.reason
    assert model.score(["read", "open", "close"]).reason.count("start→read never seen") == 1


def test_truncated_session_trips_every_order_free_and_order_view(model: SessionModel) -> None:
    verdict = model.score(["open"])
    assert verdict.anomalous
    assert set(model.findings(["open"])) == {"invariant", "ngram", "count", "keyset"}
    # n(open)=n(close) comes first (most specific), then the transition; the rest are counted.
    assert verdict.reason.startswith("count invariant n(")
    assert "transition open→end never seen" in verdict.reason and verdict.reason.endswith("(+2 more views)")


def test_ratio_invariants_are_mined() -> None:
    rng = random.Random(3)
    train = []
    for _ in range(200):
        k = rng.randint(1, 3)
        train.append(["alloc"] * k + ["replica"] * (3 * k) + ["done"] * rng.randint(1, 2))
    model = SessionModel().fit(train)
    assert "3·n(alloc)=n(replica)" in {str(inv) for inv in model.invariants}
    assert model.score(["alloc", "replica", "replica", "done"]).reason.startswith(
        "count invariant 3·n(alloc)=n(replica) broken (3·1 vs 2)"
    )


def test_a_view_that_fires_on_normal_sessions_needs_corroboration() -> None:
    # Interleaving: six of forty keys in any order, so one-off transitions are common in training.
    rng = random.Random(5)
    keys = [f"k{i}" for i in range(40)]
    train = [["begin", *rng.sample(keys, 6), "finish"] for _ in range(300)]
    model = SessionModel().fit(train)
    assert model.false_alarms["ngram"] > 0.1 * len(train)
    reordered = []
    for session in train:  # a seen key combination in a new order
        middle = session[1:-1]
        rng.shuffle(middle)
        reordered.append(["begin", *middle, "finish"])
    novel_order = next(s for s in reordered if set(model.findings(s)) == {"ngram"})
    verdict = model.score(novel_order)
    assert not verdict.anomalous and verdict.reason.startswith("within normal variation: transition")
    assert model.score(["begin", *novel_order[1:-1], "crash", "finish"]).anomalous


def test_fit_and_score_misuse_raise() -> None:
    with pytest.raises(ValueError):
        SessionModel().fit([])
    with pytest.raises(ValueError):
        SessionModel().score(["a"])
    with pytest.raises(ValueError):
        SessionModel(ngram=0)


def test_session_model_accepts_any_hashable_keys_and_generators() -> None:
    model = SessionModel().fit(((1, "x", (2, 3)) for _ in range(50)))
    assert not model.score([1, "x", (2, 3)]).anomalous
    assert model.score([1, "x", (9,)]).reason.startswith("key (9,) never seen in training")


# -- SessionModel on HDFS (DeepLog's preprocessed sessions)


@pytest.fixture(scope="module")
def hdfs() -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    if not (HDFS_DIR / "hdfs_train").exists():
        pytest.skip(f"HDFS sessions not present at {HDFS_DIR} (see benchmarks/anomaly_eval.py)")
    return load_sessions(HDFS_DIR / "hdfs_train"), load_sessions(HDFS_DIR / "hdfs_test_abnormal")


def test_hdfs_detection_and_false_positives_beat_the_ngram_baseline(hdfs) -> None:
    normal, abnormal = hdfs
    cut = len(normal) // 2  # the first half (file order) trains, the second half measures FPs
    train, held_out = normal[:cut], normal[cut:]
    model = SessionModel().fit(train)
    false_pos = sum(model.score(s).anomalous for s in held_out)
    detected = sum(model.score(s).anomalous for s in abnormal)
    # Measured: 2/2428 false positives and 16,833/16,838 detected (99.97%).
    assert false_pos <= 5
    assert detected / len(abnormal) >= 0.995
    baseline = NgramNovelty(2).fit(train)
    assert false_pos < sum(map(baseline.is_anomalous, held_out))  # 12/2428
    assert detected > sum(map(baseline.is_anomalous, abnormal))  # 81.4%
