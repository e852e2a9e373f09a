"""The ``glob`` matcher's rules, case by case: one table row per rule the README states."""

from __future__ import annotations

import itertools
from fnmatch import fnmatchcase

import pytest

from anyserve import Capability
from anyserve.errors import ConfigError
from anyserve.matching import Matcher
from anyserve_matcher_glob import GlobMatcher, is_glob
from anyserve_matcher_glob.matcher import PREFERRED_EXACT, PREFERRED_GLOB, REQUIRED_EXACT, REQUIRED_GLOB

CHAT = {"type": "chat", "model": "llama-70b"}


@pytest.fixture(scope="module")
def matcher() -> GlobMatcher:
    return GlobMatcher()


def test_is_a_matcher(matcher):
    assert isinstance(matcher, Matcher)


def test_documented_numbers():
    # The README's table is written from these; change both together.
    assert (REQUIRED_EXACT, REQUIRED_GLOB, PREFERRED_EXACT, PREFERRED_GLOB) == (1.0, 0.5, 10.0, 9.5)


# (id, offer, query, expected score)
CASES = [
    # -- required attributes, exact ------------------------------------------
    ("empty-query-matches-anything", CHAT, {}, 0.0),
    ("one-exact-key", CHAT, {"type": "chat"}, 1.0),
    ("two-exact-keys", CHAT, {"type": "chat", "model": "llama-70b"}, 2.0),
    ("missing-key-excludes", CHAT, {"type": "chat", "gpus": "2"}, None),
    ("wrong-value-excludes", CHAT, {"type": "chat", "model": "llama-8b"}, None),
    ("extra-offer-keys-cost-nothing", {**CHAT, "region": "eu", "gpus": 8}, {"type": "chat"}, 1.0),
    ("int-vs-text", {"gpus": 2}, {"gpus": "2"}, 1.0),
    ("text-vs-int", {"gpus": "2"}, {"gpus": 2}, 1.0),
    ("integral-float-vs-text", {"gpus": 2.0}, {"gpus": "2"}, 1.0),
    ("bool-vs-text", {"quantized": True}, {"quantized": "true"}, 1.0),
    ("bool-false-vs-text", {"quantized": False}, {"quantized": "true"}, None),
    ("surrounding-space-ignored", CHAT, {"type": " chat "}, 1.0),
    ("header-style-key", {"model_family": "llama"}, {"Model-Family": "llama"}, 1.0),
    ("key-case-ignored", CHAT, {"TYPE": "chat"}, 1.0),
    ("values-case-sensitive-by-default", CHAT, {"model": "LLAMA-70B"}, None),
    # -- query-side globs ------------------------------------------------------
    ("query-star", CHAT, {"model": "llama-*"}, 0.5),
    ("query-star-plus-exact", CHAT, {"type": "chat", "model": "llama-*"}, 1.5),
    ("query-star-no-match", CHAT, {"model": "mistral-*"}, None),
    ("query-question-mark", {"model": "llama-8b"}, {"model": "llama-?b"}, 0.5),
    ("question-mark-is-one-char", CHAT, {"model": "llama-?b"}, None),
    ("query-set", {"model": "llama-8b"}, {"model": "llama-[0-9]b"}, 0.5),
    ("query-negated-set", CHAT, {"model": "[!m]*"}, 0.5),
    ("query-negated-set-no-match", {"model": "mistral"}, {"model": "[!m]*"}, None),
    ("query-glob-on-int", {"gpus": 2}, {"gpus": "[2-4]"}, 0.5),
    ("query-glob-on-bool", {"quantized": True}, {"quantized": "t*"}, 0.5),
    ("glob-anchored-whole-value", CHAT, {"model": "llama"}, None),
    ("glob-anchored-whole-value-star", CHAT, {"model": "*-70"}, None),
    ("any-value-still-needs-the-key", {"type": "chat"}, {"model": "*"}, None),
    ("any-value-with-key", CHAT, {"model": "*"}, 0.5),
    ("glob-case-sensitive-by-default", CHAT, {"model": "Llama-*"}, None),
    ("star-matches-slash", {"model": "org/llama-70b"}, {"model": "org*"}, 0.5),
    ("star-matches-empty", {"model": "llama-"}, {"model": "llama-*"}, 0.5),
    # -- literal metacharacters ------------------------------------------------
    ("bracketed-star-is-literal", {"tag": "a*b"}, {"tag": "a[*]b"}, 0.5),
    ("bracketed-star-no-wildcard", {"tag": "axb"}, {"tag": "a[*]b"}, None),
    ("unclosed-bracket-is-literal", {"tag": "a[b"}, {"tag": "a[b"}, 1.0),
    ("unclosed-bracket-no-match", {"tag": "a[c"}, {"tag": "a[b"}, None),
    # -- offer-side globs ------------------------------------------------------
    ("offer-star", {"type": "chat", "model": "llama-*"}, {"model": "llama-70b"}, 0.5),
    ("offer-star-plus-exact", {"type": "chat", "model": "llama-*"}, {"type": "chat", "model": "llama-8b"}, 1.5),
    ("offer-star-no-match", {"model": "llama-*"}, {"model": "mistral-7b"}, None),
    ("offer-any", {"model": "*"}, {"model": "anything"}, 0.5),
    ("offer-set", {"gpus": "[1-8]"}, {"gpus": 4}, 0.5),
    # -- both sides globs: never intersected ------------------------------------
    ("same-pattern-text-is-exact", {"model": "llama-*"}, {"model": "llama-*"}, 1.0),
    ("query-pattern-covers-offer-pattern-text", {"model": "llama-*"}, {"model": "*"}, 0.5),
    ("offer-pattern-covers-query-pattern-text", {"model": "*"}, {"model": "llama-*"}, 0.5),
    ("overlapping-patterns-do-not-match", {"model": "*-70b"}, {"model": "llama-*"}, None),
    # -- preferences --------------------------------------------------------------
    ("pref-underscore-satisfied", {**CHAT, "region": "eu"}, {"type": "chat", "prefer_region": "eu"}, 11.0),
    ("pref-dot-satisfied", {**CHAT, "region": "eu"}, {"type": "chat", "prefer.region": "eu"}, 11.0),
    ("pref-from-header-name", {**CHAT, "region": "eu"}, {"Prefer-Region": "eu"}, 10.0),
    ("pref-wrong-value-never-excludes", {**CHAT, "region": "us"}, {"type": "chat", "prefer_region": "eu"}, 1.0),
    ("pref-missing-key-never-excludes", CHAT, {"type": "chat", "prefer_region": "eu"}, 1.0),
    ("pref-does-not-rescue-required", {**CHAT, "region": "eu"}, {"type": "embed", "prefer_region": "eu"}, None),
    ("pref-only-query-matches-all", CHAT, {"prefer_region": "eu"}, 0.0),
    ("pref-query-glob", {"region": "eu-west"}, {"prefer_region": "eu-*"}, 9.5),
    ("pref-offer-glob", {"region": "*"}, {"prefer_region": "eu"}, 9.5),
    ("pref-normalised-value", {"gpus": 8}, {"prefer_gpus": "8"}, 10.0),
    ("pref-multi-word-attribute", {"model_family": "llama"}, {"prefer_model_family": "llama"}, 10.0),
    ("two-prefs-satisfied", {"region": "eu", "tier": "gold"}, {"prefer_region": "eu", "prefer.tier": "gold"}, 20.0),
    ("one-of-two-prefs", {"region": "eu", "tier": "gold"}, {"prefer_region": "eu", "prefer_tier": "silver"}, 10.0),
    ("required-and-preferred-same-key", CHAT, {"model": "llama-*", "prefer_model": "llama-70b"}, 10.5),
    ("bare-prefix-is-a-required-key", CHAT, {"prefer_": "x"}, None),
    ("bare-prefix-required-satisfied", {"prefer_": "x"}, {"prefer_": "x"}, 1.0),
    ("offer-keys-are-never-preferences", {"prefer_region": "eu"}, {"prefer_region": "eu"}, 0.0),
    # -- runtime keys ---------------------------------------------------------------
    ("query-stream-ignored", CHAT, {"type": "chat", "stream": "true"}, 1.0),
    ("query-state-ignored", CHAT, {"type": "chat", "state": "cold"}, 1.0),
    ("offer-runtime-keys-ignored", {**CHAT, "stream": True, "state": "hot"}, {"type": "chat"}, 1.0),
    ("runtime-keys-on-both-sides-ignored", {**CHAT, "state": "hot"}, {"state": "cold"}, 0.0),
    ("runtime-key-preference-ignored", {**CHAT, "state": "hot"}, {"prefer_state": "hot"}, 0.0),
]


@pytest.mark.parametrize(("offer", "query", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_score(matcher, offer, query, expected):
    assert matcher.score(Capability(offer), query) == expected
    # A plain mapping as the offer scores the same as a Capability.
    assert matcher.score(dict(offer), query) == expected
    # Cached and uncached answers agree.
    assert matcher.score(Capability(offer), query) == expected


# (id, offers by name, query, the name that must score best)
RANKINGS = [
    (
        "exact-beats-offer-glob-and-catch-all",
        {"exact": CHAT, "family": {"type": "chat", "model": "llama-*"}, "any": {"type": "chat", "model": "*"}},
        {"type": "chat", "model": "llama-70b"},
        "exact",
    ),
    (
        "more-exact-keys-beat-globbed-ones",
        {"exact": {"type": "chat", "model": "llama-70b"}, "glob": {"type": "c*", "model": "llama-*"}},
        {"type": "chat", "model": "llama-70b"},
        "exact",
    ),
    (
        "satisfied-preference-wins",
        {"us": {**CHAT, "region": "us"}, "eu": {"type": "chat", "model": "llama-8b", "region": "eu"}},
        {"model": "llama-*", "prefer_region": "eu"},
        "eu",
    ),
    (
        "preference-dominates-specificity",
        {"exact-us": {**CHAT, "region": "us"}, "glob-eu": {"type": "chat", "model": "llama-*", "region": "eu"}},
        {"type": "chat", "model": "llama-70b", "prefer_region": "eu"},
        "glob-eu",
    ),
    (
        "more-preferences-win",
        {
            "one": {**CHAT, "region": "eu", "tier": "bronze"},
            "two": {**CHAT, "region": "eu", "tier": "gold"},
            "none": {**CHAT, "region": "us", "tier": "bronze"},
        },
        {"type": "chat", "prefer_region": "eu", "prefer_tier": "gold"},
        "two",
    ),
    (
        "exact-preference-beats-glob-preference",
        {"glob": {**CHAT, "region": "*"}, "exact": {**CHAT, "region": "eu"}},
        {"type": "chat", "prefer_region": "eu"},
        "exact",
    ),
]


@pytest.mark.parametrize(("offers", "query", "best"), [r[1:] for r in RANKINGS], ids=[r[0] for r in RANKINGS])
def test_ranking(matcher, offers, query, best):
    scores = {name: matcher.score(Capability(offer), query) for name, offer in offers.items()}
    assert all(score is not None for score in scores.values()), scores
    top = max(scores.values())
    assert [name for name, score in scores.items() if score == top] == [best], scores


@pytest.mark.parametrize(("required", "preferred"), [(18, 1), (16, 3), (10, 9), (0, 19)])
def test_more_preferences_win_while_the_query_has_fewer_than_20_keys(matcher, required, preferred):
    # The README's bound, at its worst case: A satisfies every preference, each only by
    # glob, and fits every required key by glob; B satisfies one preference fewer, exactly,
    # and fits every required key exactly. A - B = 10 - 0.5 * (keys) > 0 for keys < 20.
    keys = [f"k{i}" for i in range(required)]
    prefs = [f"p{i}" for i in range(preferred)]
    query = {**{k: "v" for k in keys}, **{f"prefer_{p}": "v" for p in prefs}}
    a = Capability({**{k: "*" for k in keys}, **{p: "*" for p in prefs}})
    b = Capability({**{k: "v" for k in keys}, **{p: "v" for p in prefs[1:]}})
    assert matcher.score(a, query) - matcher.score(b, query) == 10 - 0.5 * (required + preferred)
    assert matcher.score(a, query) > matcher.score(b, query)


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------


INSENSITIVE = [
    ("exact-ignores-case", CHAT, {"model": "LLAMA-70B"}, 1.0),
    ("query-glob-ignores-case", CHAT, {"model": "Llama-*"}, 0.5),
    ("offer-glob-ignores-case", {"model": "LLAMA-*"}, {"model": "llama-8b"}, 0.5),
    ("preference-ignores-case", {"region": "EU"}, {"prefer_region": "eu"}, 10.0),
    ("bool-any-case", {"quantized": True}, {"quantized": "TRUE"}, 1.0),
    ("still-excludes-other-values", CHAT, {"model": "MISTRAL-*"}, None),
]


@pytest.mark.parametrize(("offer", "query", "expected"), [c[1:] for c in INSENSITIVE], ids=[c[0] for c in INSENSITIVE])
def test_case_insensitive_values(offer, query, expected):
    matcher = GlobMatcher.from_options({"case_sensitive_values": False})
    assert matcher.score(Capability(offer), query) == expected


def test_case_sensitivity_is_per_instance():
    offer, query = Capability(CHAT), {"model": "LLAMA-70B"}
    assert GlobMatcher.from_options({"case_sensitive_values": False}).score(offer, query) == 1.0
    assert GlobMatcher.from_options({}).score(offer, query) is None


def test_custom_prefix_replaces_the_defaults():
    matcher = GlobMatcher.from_options({"prefer_prefix": "want-"})
    assert matcher.prefer_prefixes == ("want_",)  # normalised like a key: header spelling works
    offer = Capability({**CHAT, "region": "eu"})
    assert matcher.score(offer, {"type": "chat", "want_region": "eu"}) == 11.0
    assert matcher.score(offer, {"type": "chat", "Want-Region": "us"}) == 1.0
    # "prefer_region" is now an ordinary required attribute the offer lacks.
    assert matcher.score(offer, {"type": "chat", "prefer_region": "eu"}) is None


def test_prefix_list_and_longest_prefix_first():
    matcher = GlobMatcher.from_options({"prefer_prefix": ["p_", "p_x_"]})
    assert matcher.prefer_prefixes == ("p_x_", "p_")
    assert matcher.preference_key("p_x_region") == "region"
    assert matcher.preference_key("p_region") == "region"
    assert matcher.preference_key("region") is None


def test_empty_prefix_list_disables_preferences():
    matcher = GlobMatcher.from_options({"prefer_prefix": []})
    offer = Capability({**CHAT, "region": "eu"})
    assert matcher.score(offer, {"prefer_region": "eu"}) is None
    assert matcher.score(Capability(prefer_region="eu"), {"prefer_region": "eu"}) == 1.0


def test_default_prefixes():
    matcher = GlobMatcher.from_options({})
    assert set(matcher.prefer_prefixes) == {"prefer.", "prefer_"}
    assert "prefer_prefix=['prefer.', 'prefer_']" in repr(matcher)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prefer": "x"}, r"unknown option\(s\) prefer in \[matcher.options\]; known options: case_sensitive_values"),
        ({"weights": 1, "zz": 2}, r"unknown option\(s\) weights, zz.*prefer_prefix"),
        ({"prefer_prefix": ""}, "must not contain an empty prefix"),
        ({"prefer_prefix": ["prefer_", "  "]}, "must not contain an empty prefix"),
        ({"prefer_prefix": 5}, "prefer_prefix must be a string or a list of strings, got 5"),
        ({"prefer_prefix": ["ok", 1]}, "prefer_prefix must be a string or a list of strings"),
        ({"prefer_prefix": {"a": 1}}, "prefer_prefix must be a string or a list of strings"),
        ({"case_sensitive_values": "no"}, "case_sensitive_values must be true or false, got 'no'"),
        ({"case_sensitive_values": 0}, "case_sensitive_values must be true or false"),
    ],
)
def test_bad_options_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        GlobMatcher.from_options(options)


# --------------------------------------------------------------------------
# What counts as a glob: the same as fnmatch
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "glob"),
    [
        ("llama-70b", False),
        ("llama-*", True),
        ("llama-?b", True),
        ("[ab]", True),
        ("[!a]", True),
        ("[]]", True),
        ("[!]]", True),
        ("a[b", False),
        ("a]b", False),
        ("[]", False),
        ("[!]", False),
        ("", False),
    ],
)
def test_is_glob_examples(text, glob):
    assert is_glob(text) is glob


def test_is_glob_agrees_with_fnmatch_exhaustively():
    # Without * and ?, a text is a pattern exactly when fnmatch stops matching it against itself
    # (a set consumes several pattern characters but matches one character).
    alphabet = "ab[]!-^"
    for size in range(6):
        for chars in itertools.product(alphabet, repeat=size):
            text = "".join(chars)
            assert is_glob(text) is (not fnmatchcase(text, text)), text
