"""Log template mining: group a window of log messages into templates, variables written as `<*>`.

    result = mine_templates(["Connection from 10.0.0.1 closed", "Connection from 10.0.0.7 closed"])
    result.templates    # [Template(id=0, text='Connection from <*> closed')]
    result.assignments  # [0, 0]

A batch miner: it sees the whole window at once (drain3 grows a tree one line at a time), it is
deterministic and it needs only the standard library. The idea follows Brain ("Log Parsing with
Bidirectional Parallel Tree", INFOCOM 2023): the words one logging statement writes always appear together,
so among messages of the same length they have the same frequency, and variables have lower ones.

1. Deduplicate the messages, apply the masks (regexes, in order, each match replaced by `<*>`), split on
   whitespace and abstract each token on its own: a word with a digit in it (`blk_123`, `0x1f`,
   `10.0.0.1:80`) becomes `<*>` (`uid=0` becomes `uid=<*>`), as do paths and day and month names.
2. Group the abstracted messages by token count. Key every message by its *longest common pattern*: the
   largest set of its (position, word) pairs that share one frequency within the group.
3. Split each keyed group top-down, one column at a time, fewest distinct values first: a column is either
   a variable (`<*>` for the whole subtree) or names different events (one child per value). `_is_variable`
   makes that call; the few generic rules live there (no rule knows any particular log format).
4. Each leaf is a template: a variable column keeps the punctuation all its values share (`uid=<*>`), runs
   of `<*>` collapse into one so variable-length lists still match, and leaves with one text are merged.

Cost: linear in the number of messages plus the work per *distinct* message, so repetitive windows are cheap.
Masks are usually most of the time; those that cannot match whitespace (DEFAULT_MASKS and most custom ones,
see `_is_token_local`) run once per distinct token, the others once per distinct message.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

__all__ = ["DEFAULT_MASKS", "WILDCARD", "Template", "MiningResult", "mine_templates"]

WILDCARD = "<*>"

# Generic variables in production logs, applied in this order (earlier masks see the raw text, so the
# broad ones like plain numbers come last). Anchored on word boundaries so they leave names such as `ssh2`
# alone (the token rules decide about those). None of them can match whitespace, so they run once per
# distinct token (`_is_token_local`). A date and a time separated by a space become `<*> <*>`, and runs of
# `<*>` collapse into one.
# Each comes with literals of which it needs at least one (None: no cheap test), to skip it when absent.
_DEFAULT_MASKS_AND_NEEDS: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    # URLs and e-mail addresses, before anything that would match their parts.
    (r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>]+", ("://",)),
    (r"\b[\w.+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+\b", ("@",)),
    # ISO 8601 dates with optional time and zone, then clock times.
    (r"\b\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b", ("-",)),
    (r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b", (":",)),
    # UUIDs.
    (r"\b[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b", ("-",)),
    # IPv6 (full or compressed, optionally bracketed with a port) and MAC addresses: hex groups, two colons
    # at least and a digit somewhere, so `std::vector` or `a:b` stay words.
    (
        r"\[?(?<![\w:.])(?=[0-9A-Fa-f:]*\d)(?=[0-9A-Fa-f]*:[0-9A-Fa-f]*:)(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}"
        r"(?![\w:])\]?(?::\d{1,5}\b)?",
        (":",),
    ),
    # IPv4 with an optional port.
    (r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?![\w.]*\d)", (".",)),
    # 0x-prefixed hex, then long hex ids and hashes (8+ hex digits, one of them a decimal digit at least).
    (r"\b0[xX][0-9A-Fa-f]+\b", ("0x", "0X")),
    (r"\b(?=[A-Fa-f]*\d)[0-9A-Fa-f]{8,}\b", None),
    # Host names: a known top-level domain, or a two-letter country one after two dots at least.
    (
        r"\b(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)+(?:com|net|org|edu|gov|mil|int|info|biz|io|ai|dev"
        r"|app|cloud|local|internal|lan|localdomain|arpa)\b(?![.\-]\w)",
        (".",),
    ),
    (r"\b(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.){2,}[a-z]{2}\b(?![.\-]\w)", (".",)),
    # Absolute or ./-relative paths, and Windows paths.
    (r"(?<![\w/.:])\.{0,2}/[\w.\-@+~%=]+(?:/[\w.\-@+~%=]*)*", ("/",)),
    (r"\b[A-Za-z]:\\[^\s\"'<>]+", (":\\",)),
    # Durations and sizes with their unit (`12ms`, `1.5s`, `300KB`), before bare numbers.
    (
        r"(?<![\w.\-])[-+]?\d+(?:\.\d+)?(?:ns|us|µs|ms|s|sec|secs|seconds?|m|min|mins|minutes?|h|hrs?|hours?"
        r"|d|days?|[KMGTP]i?B|[kKMGT]b|B|bytes?)\b",
        None,
    ),
    # Size units standing alone (`5.2 KB` vs `281 B`): the number before them is a variable already.
    (r"\b(?:[KMGTPE]i?)?B\b", ("B",)),
    # Any remaining number.
    (r"(?<![\w.\-])[-+]?\d+(?:[.,]\d+)*(?!\w)", None),
)
DEFAULT_MASKS: tuple[str, ...] = tuple(pattern for pattern, _ in _DEFAULT_MASKS_AND_NEEDS)
_MASK_NEEDS: dict[str, tuple[str, ...]] = {p: needs for p, needs in _DEFAULT_MASKS_AND_NEEDS if needs}


@dataclass(frozen=True)
class Template:
    id: int
    text: str  # tokens joined by single spaces, variables as <*>


@dataclass
class MiningResult:
    templates: list[Template]  # index == Template.id, numbered in order of first appearance
    assignments: list[int]  # template id of each input message, same order as the input


# --- token abstraction -------------------------------------------------------------------------------

# A "segment" is a run of word characters, `-`, `+` and single dots (`10.0.0.1`, `blk_-42`, `v2.app`);
# runs of dots are padding (`instruction......0`), not part of a segment.
_SEGMENT = re.compile(r"[-+]?\w[\w\-+]*(?:\.[\w\-+]+)*")
_DIGIT = re.compile(r"\d")
# A word with one trailing digit is usually a name (`ssh2`, `eth0`, `md5`, `L3`), not a counter: leave it to
# the column statistics instead of calling it a variable up front.
_NAME_WITH_DIGIT = re.compile(r"[A-Za-z]+\d")
# Something path-like: a slash at the start (or after an opening bracket, quote or `=`), or two slashes.
_PATH = re.compile(r"(?:^|[(\[{'\"=:,])\.{0,2}/[^/]|/.*/")
# A mask glued to word characters (`blk_-<*>`, `<*>.example.net`), which stand for the same variable.
_GLUED = re.compile(r"[\w\-+.]*<\*>(?:[\w\-+.]*<\*>)*[\w\-+.]*")
_CALENDAR_WORDS = frozenset(
    "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec Mon Tue Wed Thu Fri Sat Sun".split()
)


def _abstract_segment(match: re.Match[str]) -> str:
    segment = match.group(0)
    if not _DIGIT.search(segment) or _NAME_WITH_DIGIT.fullmatch(segment):
        return segment
    return WILDCARD


def _abstract_token(token: str) -> str:
    """The token with its obvious variables replaced: digits in a segment, paths, calendar words."""
    if token in _CALENDAR_WORDS or ("/" in token and _PATH.search(token)):
        return WILDCARD
    if WILDCARD in token:
        token = _GLUED.sub(WILDCARD, token)
    # Fast paths: most tokens are plain words, and most others one segment (`1234`, `10.0.0.1`, `blk_42`).
    if not _DIGIT.search(token):
        return token
    if _SEGMENT.fullmatch(token):
        return token if _NAME_WITH_DIGIT.fullmatch(token) else WILDCARD
    return _SEGMENT.sub(_abstract_segment, token)


class _TokenCache(dict[str, str]):
    """token -> abstracted token; tokens repeat a lot, so each is abstracted once per call."""

    def __missing__(self, token: str) -> str:
        abstracted = self[token] = _abstract_token(token)
        return abstracted


# --- the column decision -----------------------------------------------------------------------------

# A column with this many distinct words is a variable...
_MANY_VALUES = 5
# ...or with this many, when all are plain lowercase words (user names, host names).
_FEW_NAMES = 3
# Enum-like columns (ALL_CAPS states, the first word of a message) name events; only this many values
# make them a variable.
_ENUM_VALUES = 10
_LOWER_WORD = re.compile(r"[a-z][a-z_\-]*")
_CAPS_WORD = re.compile(r"[A-Z][A-Z_]*")
_NOT_LETTERS = re.compile(r"[^A-Za-z]+")


def _is_variable(values: Collection[str], column: int) -> bool:
    """Decide whether the distinct `values` one column takes in a group of messages are a variable.

    False means they name different events, and the group splits on this column.
    """
    count = len(values)
    masked = [value for value in values if WILDCARD in value]
    if masked:
        # `rhost=<*>` vs `rhost=<*>:<*>` (one word around differently masked parts), and `(<*>)` vs `()`
        # (the variable was empty) are one column of values.
        emptied = {value.replace(WILDCARD, "") for value in masked}
        if len({_NOT_LETTERS.sub("", value) for value in emptied}) == 1 and all(
            value in emptied for value in values if WILDCARD not in value
        ):
            return True
        # A column that sometimes holds a known variable and takes several values is one too; with only
        # two values (`****` vs `<*>`, `tty=:<*>` vs `tty=NODEVssh`) it is more likely two events.
        if count >= _FEW_NAMES:
            return True
    if column == 0 or all(_CAPS_WORD.fullmatch(value) for value in values):
        return count >= _ENUM_VALUES
    if count >= _MANY_VALUES:
        return True
    return count >= _FEW_NAMES and all(_LOWER_WORD.fullmatch(value) for value in values)


# --- mining ------------------------------------------------------------------------------------------


def _pattern_key(tokens: tuple[str, ...], frequency: list[Counter[str]]) -> tuple[tuple[int, str], ...]:
    """The message's longest common pattern: its largest set of (position, word) with one frequency.

    Ties go to the higher frequency. Known variables never count.
    """
    by_frequency: dict[int, list[int]] = defaultdict(list)
    for column, token in enumerate(tokens):
        if token != WILDCARD:
            by_frequency[frequency[column][token]].append(column)
    if not by_frequency:
        return ()
    _, columns = max(by_frequency.items(), key=lambda item: (len(item[1]), item[0]))
    return tuple((column, tokens[column]) for column in columns)


def _split_group(
    members: list[int], columns: list[int], messages: list[tuple[str, ...]], out: list[tuple[str, ...]]
) -> None:
    """Split one keyed group into templates; writes each member's template tokens into `out`.

    Iterative (an explicit stack), as long messages could nest deeper than Python's recursion limit.
    """
    # (messages, columns still to decide, variable columns so far -> the token they show)
    stack: list[tuple[list[int], list[int], dict[int, str]]] = [(members, columns, {})]
    while stack:
        node, candidates, variables = stack.pop()
        varying = []
        for column in candidates:
            values = {messages[index][column] for index in node}
            if len(values) > 1:
                varying.append((len(values), column, values))
        # Fewest values first: event-naming words take few values, variables many.
        varying.sort(key=lambda item: (item[0], item[1]))
        variables = dict(variables)
        for position, (_, column, values) in enumerate(varying):
            if _is_variable(values, column):
                variables[column] = _variable_token(values)
                continue
            rest = [item[1] for item in varying[position + 1 :]]
            children: dict[str, list[int]] = defaultdict(list)
            for index in node:
                children[messages[index][column]].append(index)
            stack.extend((child, rest, variables) for child in children.values())
            break
        else:
            for index in node:
                out[index] = tuple(variables.get(column, token) for column, token in enumerate(messages[index]))


def _variable_token(values: Collection[str]) -> str:
    """`<*>` with the punctuation all `values` share around it: `uid=<*>`, `(<*>)`, `[<*>]`."""
    prefix = os.path.commonprefix(list(values))
    # Whole affixes ending in punctuation only: `cyrus` and `news` give `<*>`, not `<*>s`.
    prefix = prefix[: max((i + 1 for i, char in enumerate(prefix) if not char.isalnum()), default=0)]
    rests = [value[len(prefix) :] for value in values]
    suffix = os.path.commonprefix([rest[::-1] for rest in rests])[::-1]
    suffix = suffix[min((i for i, char in enumerate(suffix) if not char.isalnum()), default=len(suffix)) :]
    if WILDCARD in prefix + suffix:
        return WILDCARD
    return prefix + WILDCARD + suffix


def _collapse_wildcards(tokens: tuple[str, ...]) -> str:
    kept = [t for i, t in enumerate(tokens) if not (t == WILDCARD and i and tokens[i - 1] == WILDCARD)]
    return " ".join(kept)


def _template_tokens(messages: list[tuple[str, ...]], weights: list[int]) -> list[tuple[str, ...]]:
    """Template tokens for each distinct abstracted message."""
    out: list[tuple[str, ...]] = [()] * len(messages)
    by_length: dict[int, list[int]] = defaultdict(list)
    for index, tokens in enumerate(messages):
        by_length[len(tokens)].append(index)
    for length, members in by_length.items():
        if len(members) == 1:  # alone with its length: nothing to compare with
            out[members[0]] = messages[members[0]]
            continue
        frequency: list[Counter[str]] = [Counter() for _ in range(length)]
        for index in members:
            weight = weights[index]
            for column, token in enumerate(messages[index]):
                frequency[column][token] += weight
        groups: dict[tuple[tuple[int, str], ...], list[int]] = defaultdict(list)
        for index in members:
            groups[_pattern_key(messages[index], frequency)].append(index)
        for key, group in groups.items():
            fixed = {column for column, _ in key}
            _split_group(group, [c for c in range(length) if c not in fixed], messages, out)
    return out


# A regex made only of these pieces can neither match whitespace nor look past it, so it finds the same
# matches in each whitespace-separated token as in the whole message (`\b` and lookarounds see a token's
# edge as they see the space there). Deliberately narrow: anything else takes the per-message path.
# Flags and group syntax pass as literals, which is harmless: every atom is still one of these.
_TOKEN_LOCAL_REGEX = re.compile(
    r"""(?:
        \\[dwbBS]                                           # digit, word, boundaries, non-space
      | \\[^\sA-Za-z0-9]                                    # an escaped punctuation character
      | \[(?!\^)(?:\\[dwS]|\\[!-/:-@\[-`{-~]|[!-Z^-~])+\]    # a class of printable ASCII (ranges stay in it)
      | \[\^(?:\\.|[^\\\]])*?\\s(?:\\.|[^\\\]])*\]          # a negated class that excludes whitespace
      | [()|*+?]
      | \{\d*,?\d*\}                                        # counted repeats
      | [^\s\\.\[\]()|*+?{}^$]                              # any other literal but whitespace
    )*""",
    re.VERBOSE,
)
_LONG_TOKEN = 512
# Where an empty match would make a `<*>` token of its own in a message but not in its tokens.
_BETWEEN_SPACES = (("", 0), (" ", 0), (" ", 1), ("  ", 1))


def _is_token_local(pattern: re.Pattern[str]) -> bool:
    return _TOKEN_LOCAL_REGEX.fullmatch(pattern.pattern) is not None and not any(
        pattern.match(text, position) for text, position in _BETWEEN_SPACES
    )


def _masked_tokens(tokens: list[str], patterns: list[re.Pattern[str]]) -> list[str]:
    """Each token with every pattern's matches replaced by `<*>`, pattern after pattern.

    Tokens hold no newline, so all of them go through each regex in one call, joined by newlines: one
    call per pattern rather than one per pattern and token.
    """
    if not patterns or not tokens:
        return tokens
    joined = "\n".join(tokens)
    for pattern in patterns:
        needs = _MASK_NEEDS.get(pattern.pattern)
        if needs is None or any(literal in joined for literal in needs):
            joined = pattern.sub(WILDCARD, joined)
    masked = joined.split("\n")
    if len(masked) == len(tokens):
        return masked
    # Only a pattern that matches a newline gets here; then one token at a time is the only safe way.
    return [_mask_text(token, patterns) for token in tokens]


def _mask_text(text: str, patterns: list[re.Pattern[str]]) -> str:
    for pattern in patterns:
        text = pattern.sub(WILDCARD, text)
    return text


def _abstract_messages(
    texts: list[str], patterns: list[re.Pattern[str]], token_level: bool
) -> list[tuple[str, ...]]:
    """Each text masked, split on whitespace, and every token abstracted (`_abstract_token`).

    `token_level` says no pattern can match whitespace or look past it (`_is_token_local`), so masking each
    distinct token once gives the same tokens as masking every message, at a fraction of the cost.
    """
    if token_level:
        split = [text.split() for text in texts]
        distinct = list(dict.fromkeys(token for tokens in split for token in tokens))
        # A token longer than _LONG_TOKEN is left unmasked (its abstraction below still applies): the host-name
        # masks take time quadratic in a token's length ("0.0.0.…" of 20k characters took seconds).
        short = [token for token in distinct if len(token) <= _LONG_TOKEN]
        masked_short = dict(zip(short, _masked_tokens(short, patterns)))
        masked = [masked_short.get(token, token) for token in distinct]
        abstract = {token: _abstract_token(text) for token, text in zip(distinct, masked)}.__getitem__
        return [tuple(map(abstract, tokens)) for tokens in split]
    cache_abstract = _TokenCache().__getitem__
    return [tuple(map(cache_abstract, _mask_text(text, patterns).split())) for text in texts]


def mine_templates(messages: Sequence[str], masks: Sequence[str] | None = None) -> MiningResult:
    """Group `messages` into templates.

    `masks` are regexes applied in order to every message, each match replaced by `<*>`; None means
    DEFAULT_MASKS, an empty sequence means none. An invalid regex raises `re.error`.
    """
    patterns = [re.compile(mask) for mask in (DEFAULT_MASKS if masks is None else masks)]

    # Distinct raw messages; each step below runs once per distinct value, not per message.
    raw_index: dict[str, int] = {}
    raw_of_message = [raw_index.setdefault(message, len(raw_index)) for message in messages]

    message_index: dict[tuple[str, ...], int] = {}
    abstracted: list[tuple[str, ...]] = []
    abstracted_of_raw: list[int] = []
    token_level = all(_is_token_local(pattern) for pattern in patterns)
    for tokens in _abstract_messages(list(raw_index), patterns, token_level):
        index = message_index.get(tokens)
        if index is None:
            index = message_index[tokens] = len(abstracted)
            abstracted.append(tokens)
        abstracted_of_raw.append(index)

    weights = [0] * len(abstracted)
    for raw in raw_of_message:
        weights[abstracted_of_raw[raw]] += 1

    texts = [_collapse_wildcards(tokens) for tokens in _template_tokens(abstracted, weights)]

    # Number templates by first appearance so ids follow the input, whatever the grouping order. Distinct
    # messages are in order of first appearance already.
    template_ids: dict[str, int] = {}
    templates: list[Template] = []
    id_of_raw = []
    for abstracted_index in abstracted_of_raw:
        text = texts[abstracted_index]
        template_id = template_ids.get(text)
        if template_id is None:
            template_id = template_ids[text] = len(templates)
            templates.append(Template(template_id, text))
        id_of_raw.append(template_id)
    return MiningResult(templates=templates, assignments=[id_of_raw[raw] for raw in raw_of_message])
