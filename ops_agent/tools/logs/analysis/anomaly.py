"""Log anomaly detection: pure functions over counts that the caller has already aggregated, and a
session model that learns what normal sessions (sequences of template ids) look like.

Window primitives, where every result is an `Anomaly` and lists are sorted by score, highest first:

- `volume_anomalies`: per key (e.g. "api/error"), the current window against the N previous windows.
  The baseline is the median, and the scale is max(1.4826·MAD, sqrt(median), 0.15·median, 1). The
  sqrt term is a Poisson floor, so low-count keys are not flagged for small wiggles. The 15% term
  covers the ordinary window-to-window noise of busy keys, which a MAD over a dozen windows often
  underestimates. Score = robust z.
- `novel_templates`: templates present in the current window and never in the baseline.
  Score = -log10 p, as in `rate_jumps`, with a half-occurrence pseudo-count as the expectation.
- `rate_jumps`: templates whose rate jumped. This is a one-sided Poisson tail test against the
  baseline rate (add-one smoothed), scaled to the current span. Score = -log10 p.

Session model (`SessionModel`): several order-aware and order-free views of a normal session. These
are unseen keys, unseen n-grams, count invariants (Invariants Mining: n(a)=k·n(b), n(a)=n(b)+n(c)),
unseen key combinations and count bounds. Each view's false-alarm rate is estimated on the training
set, leaving one session out at a time. A session's score adds up -log10 of the rates of the views
it trips. The flag comes from where that score falls among the held-out scores of the training
sessions (conformal), so views that fire together are not double-counted.

Defaults were chosen on `benchmarks/anomaly_eval.py`'s synthetic no-fault stream (zero flagged
windows over 5 seeds × 500 windows and over 20 further seeds) and, for `SessionModel`, on held-out
normal HDFS sessions only.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

__all__ = [
    "Anomaly",
    "Invariant",
    "SessionModel",
    "SessionVerdict",
    "novel_templates",
    "poisson_sf_log10",
    "rate_jumps",
    "volume_anomalies",
]

_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this gives its standard deviation


@dataclass(frozen=True)
class Anomaly:
    kind: str  # "volume_spike" | "volume_drop" | "new_template" | "rate_jump"
    key: str  # "service/severity" for volume kinds, the template text otherwise
    # >= 0, larger = more anomalous; robust z for volume kinds, -log10 p for template kinds
    score: float
    observed: float
    expected: float
    explanation: str  # one line, human-readable


# ---------------------------------------------------------------------------------------------
# Window primitives


def volume_anomalies(
    history: Mapping[str, Sequence[float]],
    current: Mapping[str, float],
    *,
    window_label: str,
    min_score: float = 9.0,
    min_count: float = 10.0,
    min_drop_score: float = 3.0,
    min_relative_noise: float = 0.15,
) -> list[Anomaly]:
    """Spikes, and drops to near zero, of per-key counts in the current window.

    `history[key]` holds the counts of the N previous equal-length windows and `current[key]` the
    count of the window under test. `window_label` is used in explanations, e.g. "5m".

    A key missing from history counts as zero in every baseline window. A key missing from `current`
    counts as zero now.

    A spike needs `observed >= min_count` and a robust z of at least `min_score`. Because of the
    relative floor, a busy key must reach at least 1 + min_score·min_relative_noise (2.35×) its
    median.

    A drop needs a key that was consistently busy (median >= 2·min_count, at most 10% of windows
    empty) to fall to at most 10% of its median, with z >= min_drop_score. The z of a fall to zero
    is only about 1/(relative noise): 4-7 for a busy key with ±15-25% noise. The "near zero"
    condition already demands a large effect, so drops have their own, lower threshold. Quiet keys
    (a dozen lines per window) fall near zero by chance too often to count.
    """
    windows = max((len(counts) for counts in history.values()), default=0)
    if windows == 0:
        return []  # without a baseline there is nothing to compare against
    found: list[Anomaly] = []
    for key in dict.fromkeys([*history, *current]):
        past = [float(count) for count in history.get(key, ())]
        past += [0.0] * (windows - len(past))  # a short history: the key was absent from the other windows
        observed = float(current.get(key, 0.0))
        median = _median(past)
        mad = _median([abs(count - median) for count in past])
        scale = max(_MAD_TO_SIGMA * mad, math.sqrt(max(median, 0.0)), min_relative_noise * median, 1.0)
        z = (observed - median) / scale
        what = f"{key.replace('/', ' ')} lines"
        typical = f"a typical {_num(median)} (median of {windows} windows)"
        if observed >= min_count and z >= min_score:
            found.append(Anomaly(
                "volume_spike", key, z, observed, median,
                f"{what}: {_num(observed)} in the last {window_label} vs {typical}, {z:.1f} robust z",
            ))
        elif (
            -z >= min_drop_score
            and median >= 2 * min_count
            and observed <= 0.1 * median
            and sum(count <= 0 for count in past) <= 0.1 * windows
        ):
            found.append(Anomaly(
                "volume_drop", key, -z, observed, median,
                f"{what}: {_num(observed)} in the last {window_label} vs {typical}, {-z:.1f} robust z below",
            ))
    return _by_score(found)


def novel_templates(
    baseline: Mapping[str, int], current: Mapping[str, int], *, min_count: int = 10
) -> list[Anomaly]:
    """Templates with at least `min_count` occurrences now that never occurred in the baseline.

    The expectation is half an occurrence: a pseudo-count that stands in for "never seen". It is
    scaled by how many lines the current window holds relative to the baseline, so a short baseline
    makes novelty less surprising. Score = -log10 P(Poisson(expected) >= observed). An empty baseline
    gives no anomalies, because everything would be "new".
    """
    baseline_total = sum(baseline.values())
    if baseline_total <= 0:
        return []
    current_total = sum(current.values())
    expected = 0.5 * current_total / baseline_total
    found = []
    for template, count in current.items():
        if count >= min_count and baseline.get(template, 0) <= 0:
            score = -poisson_sf_log10(count, expected)
            found.append(Anomaly(
                "new_template", template, score, float(count), expected,
                f"new template ({count} lines, never in the baseline of {baseline_total} lines): {_clip(template)}",
            ))
    return _by_score(found)


def rate_jumps(
    baseline: Mapping[str, int],
    baseline_span_s: float,
    current: Mapping[str, int],
    current_span_s: float,
    *,
    min_score: float = 9.0,
    min_count: int = 10,
    min_ratio: float = 4.0,
) -> list[Anomaly]:
    """Templates whose rate jumped from the baseline period to the current one.

    expected = (baseline count + 1) · current_span / baseline_span. The +1 keeps a template seen once
    (or a few times) in the baseline from exploding. A template is flagged when observed >= min_count,
    observed >= min_ratio · expected (a statistically sure 50% rise is not a jump), and
    -log10 P(Poisson(expected) >= observed) >= min_score. Templates absent from the baseline are left
    to `novel_templates`.
    """
    if baseline_span_s <= 0 or current_span_s <= 0:
        return []
    ratio = current_span_s / baseline_span_s
    found = []
    for template, count in current.items():
        before = baseline.get(template, 0)
        if before <= 0 or count < min_count:
            continue
        expected = (before + 1) * ratio
        if count < min_ratio * expected:
            continue
        score = -poisson_sf_log10(count, expected)
        if score >= min_score:
            found.append(Anomaly(
                "rate_jump", template, score, float(count), expected,
                f"{count} in the last {_span(current_span_s)} vs {_num(expected)} expected from the baseline "
                f"({count / expected:.1f}×, -log10 p {score:.1f}): {_clip(template)}",
            ))
    return _by_score(found)


def poisson_sf_log10(k: int, lam: float) -> float:
    """log10 P(X >= k) for X ~ Poisson(lam). Computed in log space, so scores stay finite at p ~ 1e-300."""
    if k <= 0:
        return 0.0
    if lam <= 0:
        return -math.inf
    log_lam = math.log(lam)

    def log_pmf(i: int) -> float:
        return -lam + i * log_lam - math.lgamma(i + 1)

    if k > lam:  # upper tail: terms shrink from k on, so sum until they are negligible
        first = log_pmf(k)
        total, i, term = 1.0, k, 1.0
        while term > 1e-17 * total:
            term *= lam / (i + 1)
            total += term
            i += 1
        return (first + math.log(total)) / math.log(10)
    # lower tail is the short side: P(X >= k) = 1 - P(X <= k-1); terms shrink going down from k-1
    first = log_pmf(k - 1)
    total, i, term = 1.0, k - 1, 1.0
    while i > 0 and term > 1e-17 * total:
        term *= i / lam
        total += term
        i -= 1
    below = math.exp(first) * total
    return math.log10(max(1.0 - below, 1e-300))


# ---------------------------------------------------------------------------------------------
# Session model


@dataclass(frozen=True)
class SessionVerdict:
    anomalous: bool
    # Sum over the views that tripped of -log10(their held-out false-alarm rate on the training
    # sessions); 0 means nothing unusual. `anomalous` comes from where this falls among the training
    # sessions' own held-out scores (SessionModel.fp_rate), not from a fixed cut.
    score: float
    reason: str  # one line: the most specific finding(s)


@dataclass(frozen=True)
class Invariant:
    """sum(coef·n(key) for lhs) == sum(coef·n(key) for rhs) for the counts n of one session."""

    lhs: tuple[tuple[Hashable, int], ...]
    rhs: tuple[tuple[Hashable, int], ...]
    support: int  # training sessions where any of its keys occurs
    violations: int  # of those, how many break it (<= tolerance · support)

    def sides(self, counts: Mapping[Hashable, int]) -> tuple[int, int]:
        return (
            sum(coef * counts.get(key, 0) for key, coef in self.lhs),
            sum(coef * counts.get(key, 0) for key, coef in self.rhs),
        )

    def broken(self, counts: Mapping[Hashable, int]) -> bool:
        left, right = self.sides(counts)
        return left != right

    def __str__(self) -> str:
        def side(terms: tuple[tuple[Hashable, int], ...]) -> str:
            return "+".join(f"{coef}·n({key})" if coef != 1 else f"n({key})" for key, coef in terms)

        return f"{side(self.lhs)}={side(self.rhs)}"

    def explain(self, counts: Mapping[Hashable, int]) -> str:
        def values(terms: tuple[tuple[Hashable, int], ...]) -> str:
            return "+".join(
                f"{coef}·{counts.get(key, 0)}" if coef != 1 else str(counts.get(key, 0)) for key, coef in terms
            )

        return f"count invariant {self} broken ({values(self.lhs)} vs {values(self.rhs)})"


class _Edge:
    """Start/end padding for n-grams. Its own type, so it never equals a caller's key."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_START, _END = _Edge("start"), _Edge("end")
# Most specific first: this is the order in which a verdict's reason lists what tripped.
_VIEWS = ("key", "invariant", "ngram", "count", "keyset")
_RATIOS = ((1, 2), (2, 1), (1, 3), (3, 1), (2, 3), (3, 2))  # p:q for q·n(a) = p·n(b), after 1:1


class SessionModel:
    """Learns normal sessions (sequences of log keys) and scores new ones.

    Views, each a yes/no question about a session:
    - key: it holds a key never seen in training.
    - invariant: it breaks a mined linear count relation. A relation is kept if it holds in at least
      1 - invariant_tolerance of the training sessions that contain its keys.
    - ngram: it holds an n-gram (start/end padded) never seen in training. This is the classic check.
    - count: the session's length, or the count of a key seen in at least `min_count_support`
      training sessions, lies beyond `count_margin` times the training range.
    - keyset: it holds a combination of distinct keys never seen together.

    Calibration, at fit time. Each training session is held out in turn: which views would it trip
    against the others? A view that m sessions trip has evidence -log10((m + 0.5) / (N + 1)). A
    session's score is the sum of the evidence of the views it trips. The training sessions'
    held-out scores are the null distribution (conformal). Evidence is not graded by how many new
    keys or n-grams a session holds. One displaced event makes two new transitions, and grading
    raised false positives on HDFS.

    Flagging. A session is anomalous iff the share of held-out training sessions scoring at least as
    high, (1 + k) / (N + 1), is <= fp_budget. The budget is floored at 1/(N+1): a small training set
    cannot promise less. Views that trip together on odd-but-normal sessions are therefore not
    double-counted. A view that fires on normal sessions (new transitions, when interleaving
    reorders events) only counts with corroboration. A view that never does (an unseen key, a broken
    invariant) is enough on its own.
    """

    def __init__(
        self,
        *,
        ngram: int = 2,
        fp_budget: float = 0.002,
        invariant_tolerance: float = 0.002,
        min_support: int = 5,
        max_invariant_keys: int = 30,
        count_margin: float = 2.0,
        min_count_support: int = 100,
    ) -> None:
        if ngram < 1:
            raise ValueError("ngram must be >= 1")
        self.ngram = ngram
        self.fp_budget = fp_budget
        self.invariant_tolerance = invariant_tolerance
        self.min_support = min_support
        self.max_invariant_keys = max_invariant_keys
        self.count_margin = count_margin
        self.min_count_support = min_count_support
        self.sessions = 0
        self.keys: frozenset[Hashable] = frozenset()
        self.ngrams: frozenset[tuple[Hashable, ...]] = frozenset()
        self.keysets: frozenset[frozenset[Hashable]] = frozenset()
        self.invariants: list[Invariant] = []
        self.count_max: dict[Hashable, int] = {}
        self.count_min: dict[Hashable, int] = {}  # only keys present in every training session
        self.length_bounds = (0, 0)
        self.false_alarms: dict[str, int] = {}  # view -> training sessions that trip it when held out
        self.evidence: dict[str, float] = {}  # view -> -log10 of its held-out false-alarm rate
        self.calibration: list[float] = []  # held-out scores of the training sessions that scored > 0

    # -- fit

    def fit(self, sessions: Iterable[Sequence[Hashable]]) -> SessionModel:
        train = [tuple(session) for session in sessions]
        if not train:
            raise ValueError("SessionModel.fit needs at least one session")
        n = self.sessions = len(train)
        counts = [Counter(session) for session in train]
        grams = [set(_ordered_grams(session, self.ngram)) for session in train]
        keysets = [frozenset(c) for c in counts]

        # Document frequencies: in how many sessions each key / n-gram / key set occurs. Something
        # with frequency 1 is what its one session would have shown as new had it been held out.
        key_df = Counter(key for c in counts for key in c)
        gram_df = Counter(g for gs in grams for g in gs)
        keyset_df = Counter(keysets)
        self.keys = frozenset(key_df)
        self.ngrams = frozenset(gram_df)
        self.keysets = frozenset(keyset_df)
        self.invariants = self._mine_invariants(counts, key_df)

        trips: list[set[str]] = [set() for _ in train]  # the views each session trips when held out
        for i, c in enumerate(counts):
            if any(key_df[key] == 1 for key in c):
                trips[i].add("key")
            if any(gram_df[g] == 1 for g in grams[i]):
                trips[i].add("ngram")
            if keyset_df[keysets[i]] == 1:
                trips[i].add("keyset")
            # In-sample, but the tolerance already lets the odd session break an invariant, so this
            # is close to what re-mining without the session would give.
            if any(inv.broken(c) for inv in self.invariants):
                trips[i].add("invariant")
        for i in self._fit_bounds(train, counts, key_df):
            trips[i].add("count")

        self.false_alarms = {view: sum(view in t for t in trips) for view in _VIEWS}
        self.evidence = {view: -math.log10((self.false_alarms[view] + 0.5) / (n + 1)) for view in _VIEWS}
        self.calibration = sorted(sum(self.evidence[view] for view in t) for t in trips if t)
        return self

    def _fit_bounds(
        self, train: list[tuple[Hashable, ...]], counts: list[Counter[Hashable]], key_df: Counter[Hashable]
    ) -> set[int]:
        """Per-key count and length ranges. Returns the sessions that would fall outside when held out."""
        n, margin = len(train), self.count_margin
        per_key: dict[Hashable, list[tuple[int, int]]] = {key: [] for key in key_df}
        for i, c in enumerate(counts):
            for key, count in c.items():
                per_key[key].append((count, i))
        lengths = [(len(session), i) for i, session in enumerate(train)]
        self.length_bounds = (min(lengths)[0], max(lengths)[0])
        # A key's range is only trusted once it has been seen in enough sessions. The largest count
        # among a handful of sessions is luck: 3 replications where training only ever had 1.
        per_key = {key: values for key, values in per_key.items() if len(values) >= self.min_count_support}
        self.count_max = {key: max(values)[0] for key, values in per_key.items()}
        self.count_min = {key: min(values)[0] for key, values in per_key.items() if len(values) == n}

        tripping: set[int] = set()
        if n < 2:
            return tripping
        for values in [*per_key.values(), lengths]:
            zeros = n - len(values)  # sessions without the key count 0
            top = sorted(values, reverse=True)[:2]
            runner_up = top[1][0] if len(top) > 1 else 0
            if top[0][0] > margin * runner_up:
                tripping.add(top[0][1])
            if zeros == 1:  # the one session without an otherwise universal key
                tripping.update(set(range(n)) - {i for _, i in values})
            elif zeros == 0:
                low = sorted(values)[:2]
                if low[0][0] < low[1][0] / margin:
                    tripping.add(low[0][1])
        return tripping

    def _mine_invariants(self, counts: list[Counter[Hashable]], key_df: Counter[Hashable]) -> list[Invariant]:
        """Invariants Mining, restricted to small relations.

        1. Group keys whose counts are equal (classes).
        2. Find k:l ratios between class representatives.
        3. Find n(a) = c1·n(b) + c2·n(c), with c1 and c2 in {1, 2}, among representatives that no
           pair relation already ties together.
        """
        candidates = [key for key, df in key_df.most_common(self.max_invariant_keys) if df >= self.min_support]
        # Distinct count vectors over the candidates, with multiplicity: few for real workflows, so
        # each relation is checked against them rather than against every session.
        vectors = Counter(tuple(c.get(key, 0) for key in candidates) for c in counts)
        col = {key: i for i, key in enumerate(candidates)}
        tol = self.invariant_tolerance
        # Which distinct vectors hold each key, as a bitset. A relation can only hold where its
        # keys occur together (n(a) = n(b) + n(c) needs a present iff b or c is), and every vector
        # in a mismatch is at least one violating session, so this rules out most candidates cheaply.
        present = {key: sum(1 << j for j, vec in enumerate(vectors) if vec[col[key]]) for key in candidates}
        slack = tol * len(counts)

        def may_hold(lhs: int, rhs: int) -> bool:
            return (lhs ^ rhs).bit_count() <= slack

        def check(terms: Sequence[tuple[Hashable, int]]) -> tuple[int, int] | None:
            """(support, violations) if sum(coef·n) == 0 holds within tolerance, else None."""
            idx = [(col[key], coef) for key, coef in terms]
            support = bad = 0
            for vec, weight in vectors.items():
                if any(vec[i] for i, _ in idx):
                    support += weight
                    if sum(coef * vec[i] for i, coef in idx) != 0:
                        bad += weight
            return (support, bad) if bad <= tol * support else None

        found: list[Invariant] = []
        parent = {key: key for key in candidates}

        def root(key: Hashable) -> Hashable:
            while parent[key] != key:
                parent[key] = parent[parent[key]]
                key = parent[key]
            return key

        for a, b in combinations(candidates, 2):  # most frequent first, so roots are the busiest keys
            if root(a) != root(b) and may_hold(present[a], present[b]) and check([(a, 1), (b, -1)]):
                parent[root(b)] = root(a)
        classes: dict[Hashable, list[Hashable]] = {}
        for key in candidates:
            classes.setdefault(root(key), []).append(key)
        for rep, members in classes.items():
            for member in members[1:]:
                result = check([(member, 1), (rep, -1)])
                if result:
                    found.append(Invariant(((member, 1),), ((rep, 1),), *result))

        reps = list(classes)
        related: set[frozenset[Hashable]] = set()
        for a, b in combinations(reps, 2):
            if not may_hold(present[a], present[b]):
                continue
            for p, q in _RATIOS:
                result = check([(a, q), (b, -p)])
                if result:
                    found.append(Invariant(((a, q),), ((b, p),), *result))
                    related.add(frozenset((a, b)))
                    break
        for b, c in combinations(reps, 2):
            if frozenset((b, c)) in related:
                continue
            either = present[b] | present[c]
            for a in reps:
                if a in (b, c) or frozenset((a, b)) in related or frozenset((a, c)) in related:
                    continue
                if not may_hold(present[a], either):
                    continue
                for c1 in (1, 2):
                    for c2 in (1, 2):
                        result = check([(a, 1), (b, -c1), (c, -c2)])
                        if result:
                            found.append(Invariant(((a, 1),), ((b, c1), (c, c2)), *result))
        # Best supported first: when several break, the reason names the most established one.
        found.sort(key=lambda inv: (-inv.support, inv.violations))
        return found

    # -- score

    def score(self, session: Sequence[Hashable]) -> SessionVerdict:
        findings = self.findings(session)
        if not findings:
            return SessionVerdict(False, 0.0, "no deviation from training")
        score = sum(self.evidence[view] for view in findings)
        anomalous = self.fp_rate(score) <= max(self.fp_budget, 1 / (self.sessions + 1))
        ordered = list(findings.values())
        reason = "; ".join(ordered[:2]) + (f" (+{len(ordered) - 2} more views)" if len(ordered) > 2 else "")
        if not anomalous:
            reason = f"within normal variation: {reason}"
        return SessionVerdict(anomalous, score, reason)

    def findings(self, session: Sequence[Hashable]) -> dict[str, str]:
        """View -> one-line description, for each view the session trips (most specific first)."""
        if not self.sessions:
            raise ValueError("SessionModel used before fit")
        session = tuple(session)
        counts = Counter(session)
        found: dict[str, str] = {}
        unseen = [key for key in counts if key not in self.keys]
        if unseen:
            found["key"] = f"key {unseen[0]} never seen in training{_more(unseen)}"
        broken = next((inv for inv in self.invariants if inv.broken(counts)), None)
        if broken:
            found["invariant"] = broken.explain(counts)
        new_grams = [g for g in _ordered_grams(session, self.ngram) if g not in self.ngrams]
        if new_grams:
            what = "transition" if self.ngram == 2 else f"{self.ngram}-gram"
            found["ngram"] = f"{what} {'→'.join(map(str, new_grams[0]))} never seen{_more(new_grams)}"
        bound = self._bound_finding(session, counts)
        if bound:
            found["count"] = bound
        if frozenset(counts) not in self.keysets:
            shown = ", ".join(map(str, list(counts)[:8])) + (", …" if len(counts) > 8 else "")
            found["keyset"] = f"key combination {{{shown}}} never seen together"
        return found

    def fp_rate(self, score: float) -> float:
        """Estimated share of normal sessions scoring >= `score` (from the held-out training scores)."""
        if score <= 0:
            return 1.0
        at_least = len(self.calibration) - bisect_left(self.calibration, score - 1e-9)
        return (1 + at_least) / (self.sessions + 1)

    def _bound_finding(self, session: tuple[Hashable, ...], counts: Counter[Hashable]) -> str | None:
        margin = self.count_margin
        low, high = self.length_bounds
        if len(session) > margin * high:
            return f"length {len(session)} over {margin:g}× the training maximum {high}"
        if len(session) < low / margin:
            return f"length {len(session)} under 1/{margin:g} of the training minimum {low}"
        for key, count in counts.items():
            top = self.count_max.get(key)
            if top is not None and count > margin * top:
                return f"n({key})={count} over {margin:g}× the training maximum {top}"
        for key, least in self.count_min.items():
            count = counts.get(key, 0)
            if count < least / margin:
                return f"n({key})={count} under 1/{margin:g} of the training minimum {least} (present in every session)"
        return None


# ---------------------------------------------------------------------------------------------
# helpers


def _ordered_grams(session: tuple[Hashable, ...], n: int) -> list[tuple[Hashable, ...]]:
    # In order of appearance and deduplicated, so a reason names the first new n-gram in the session.
    if n == 1:
        return list(dict.fromkeys((key,) for key in session))
    padded = (_START,) * (n - 1) + session + (_END,) * (n - 1)
    return list(dict.fromkeys(padded[i:i + n] for i in range(len(padded) - n + 1)))


def _more(items: Sequence[object]) -> str:
    return f" (+{len(items) - 1} more)" if len(items) > 1 else ""


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _by_score(found: list[Anomaly]) -> list[Anomaly]:
    return sorted(found, key=lambda a: (-a.score, a.kind, a.key))


def _num(value: float) -> str:
    return f"{value:.0f}" if value == int(value) or value >= 100 else f"{value:.1f}"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _clip(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
