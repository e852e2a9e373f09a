"""The ``glob`` matcher through the real hook path, and in the decisions that use it."""

from __future__ import annotations

import importlib.metadata as metadata
from collections import Counter

import pytest

import anyserve_matcher_glob
import anyserve_matcher_glob.plugin
from anyserve import AnyServe, Capability
from anyserve.candidates import COLD, HOT, Candidate
from anyserve.catalog import Catalog
from anyserve.config import load_settings
from anyserve.errors import ConfigError
from anyserve.matching import Matcher
from anyserve.plugins import create_plugin_manager
from anyserve_matcher_glob import GlobMatcher


@pytest.fixture
def pm():
    return create_plugin_manager(entrypoints=False, env={}, plugins=(anyserve_matcher_glob.plugin,))


@pytest.fixture
def catalog(pm) -> Catalog:
    return Catalog(pm)


def glob_matcher(catalog: Catalog, env: dict[str, str] | None = None) -> Matcher:
    settings = load_settings(env={"ANYSERVE_MATCHER": "glob", **(env or {})})
    return catalog.matcher(settings).factory(settings.matcher.options)


# --------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------


def test_environment_selects_glob(catalog):
    record = catalog.matcher(load_settings(env={"ANYSERVE_MATCHER": "glob"}))
    assert record.name == "glob"
    assert record.description
    assert catalog.registries["matcher"].owners["glob"] == "anyserve_matcher_glob.plugin"
    matcher = record.factory({})
    assert isinstance(matcher, Matcher) and isinstance(matcher, GlobMatcher)
    assert matcher.score(Capability(type="chat", model="llama-70b"), {"model": "llama-*"}) == 0.5


def test_sits_beside_the_builtin_subset_which_stays_the_default(catalog):
    assert {"glob", "subset"} <= set(catalog.registries["matcher"].names())
    assert catalog.matcher(load_settings(env={})).name == "subset"


def test_config_file_options_reach_the_factory(catalog, tmp_path):
    config = tmp_path / "anyserve.toml"
    config.write_text(
        '[matcher]\nname = "glob"\n\n[matcher.options]\nprefer_prefix = ["want."]\ncase_sensitive_values = false\n'
    )
    settings = load_settings(config, env={})
    matcher = catalog.matcher(settings).factory(settings.matcher.options)
    offer = Capability(type="chat", model="Llama-70B", region="eu")
    assert matcher.score(offer, {"model": "llama-*", "want.region": "EU"}) == 10.5


def test_unknown_option_through_the_factory_lists_the_known_ones(catalog, tmp_path):
    config = tmp_path / "anyserve.toml"
    config.write_text('[matcher]\nname = "glob"\n\n[matcher.options]\nweights = 2\n')
    settings = load_settings(config, env={})
    with pytest.raises(ConfigError, match=r"unknown option\(s\) weights.*case_sensitive_values.*prefer_prefix"):
        catalog.matcher(settings).factory(settings.matcher.options)


def test_without_the_plugin_glob_is_not_installed():
    catalog = Catalog(create_plugin_manager(entrypoints=False, env={}))
    with pytest.raises(ConfigError, match="no capability matcher named 'glob' is installed; installed: "):
        catalog.matcher(load_settings(env={"ANYSERVE_MATCHER": "glob"}))


def test_the_installed_distribution_declares_the_entry_point():
    [ep] = [ep for ep in metadata.entry_points(group="anyserve") if ep.name == "matcher-glob"]
    assert ep.value == "anyserve_matcher_glob.plugin"
    assert ep.dist is not None and ep.dist.metadata["Name"] == "anyserve-matcher-glob"
    assert metadata.version("anyserve-matcher-glob") == anyserve_matcher_glob.__version__


def test_loads_through_entry_points_alone():
    pm = create_plugin_manager(env={"ANYSERVE_LOAD_PLUGINS": "matcher-glob"})
    assert not [f for f in pm.failures if f.name == "matcher-glob" and f.status == "error"], pm.failures
    catalog = Catalog(pm)
    assert catalog.registries["matcher"].owners["glob"] == "matcher-glob"
    assert pm.origin_of("matcher-glob").distribution == "anyserve-matcher-glob"


# --------------------------------------------------------------------------
# Routing: the built-in anyserve_select_target keeps the best score
# --------------------------------------------------------------------------


def select(pm, matcher: Matcher, query, offers: dict[str, dict], **extra) -> tuple[Counter, list[Candidate]]:
    """Score ``offers`` like the router/agent do, then ask the routing hook 50 times."""
    candidates = []
    for name, attrs in offers.items():
        score = matcher.score(Capability(attrs), query)
        if score is not None:
            candidates.append(Candidate(id=name, capability=Capability(attrs), score=score, **extra.get(name, {})))
    chosen = Counter(
        pm.hook.anyserve_select_target(query=query, candidates=candidates, scope=scope).id
        for _ in range(25)
        for scope in ("router", "agent")
    )
    return chosen, candidates


def test_routing_prefers_the_most_specific_offer_even_when_busier(pm, catalog):
    matcher = glob_matcher(catalog)
    offers = {
        "exact": {"type": "chat", "model": "llama-70b"},
        "family": {"type": "chat", "model": "llama-*"},
        "anything": {"type": "chat", "model": "*"},
        "other": {"type": "chat", "model": "mistral-7b"},
    }
    load = {"exact": {"in_flight": 9}, "family": {"in_flight": 0}, "anything": {"in_flight": 0}}
    chosen, candidates = select(pm, matcher, {"type": "chat", "model": "llama-70b"}, offers, **load)
    assert sorted(c.id for c in candidates) == ["anything", "exact", "family"]  # "other" never matched
    assert chosen == Counter({"exact": 50})


def test_routing_prefers_satisfied_preferences_over_specificity_and_warmth(pm, catalog):
    matcher = glob_matcher(catalog)
    offers = {
        "exact-us": {"type": "chat", "model": "llama-70b", "region": "us"},
        "glob-eu": {"type": "chat", "model": "llama-*", "region": "eu"},
    }
    extra = {"exact-us": {"state": HOT}, "glob-eu": {"state": COLD, "in_flight": 3}}
    query = {"type": "chat", "model": "llama-70b", "Prefer-Region": "eu"}
    chosen, _ = select(pm, matcher, query, offers, **extra)
    assert chosen == Counter({"glob-eu": 50})


def test_routing_falls_back_to_load_among_equal_scores(pm, catalog):
    matcher = glob_matcher(catalog)
    offers = {"a": {"type": "chat", "region": "us"}, "b": {"type": "chat", "region": "us"}}
    chosen, _ = select(pm, matcher, {"type": "chat", "prefer_region": "eu"}, offers, a={"in_flight": 2})
    assert chosen == Counter({"b": 50})


# --------------------------------------------------------------------------
# Agent side: a worker picks the handler the matcher scores best
# --------------------------------------------------------------------------


def test_worker_picks_the_most_specific_handler(catalog):
    from anyserve.replica.worker import WorkerHost

    app = AnyServe("glob-test")

    @app.capability(type="chat", model="llama-*")
    def family(request):
        return None

    @app.capability(type="chat", model="llama-70b")
    def exact(request):
        return None

    @app.capability(type="chat", model="llama-8b", region="eu")
    def small_eu(request):
        return None

    host = WorkerHost(app, glob_matcher(catalog))
    try:
        assert host.handler_for({"type": "chat", "model": "llama-70b"}, stream=False).func is exact
        assert host.handler_for({"type": "chat", "model": "llama-13b"}, stream=False).func is family
        assert host.handler_for({"model": "llama-*", "prefer_region": "eu"}, stream=False).func is small_eu
    finally:
        host.close()


# --------------------------------------------------------------------------
# Router side (only when anyserve-router is installed)
# --------------------------------------------------------------------------


def test_router_registry_routes_to_the_preferred_replica(pm, catalog):
    registry_mod = pytest.importorskip("anyserve_router.registry")
    from anyserve.routing import RouteRequest
    from anyserve.routing.pipeline import default_pipeline
    from anyserve_router.selection import candidates, choose

    pipeline = default_pipeline(pm)

    registry = registry_mod.ReplicaRegistry(clock=lambda: 0.0)
    registry.register("r-us", "10.0.0.1:50051", [{"type": "chat", "model": "llama-70b", "region": "us"}])
    registry.register("r-eu", "10.0.0.2:50051", [{"type": "chat", "model": "llama-*", "region": "eu", "state": "cold"}])
    registry.register("r-x", "10.0.0.3:50051", [{"type": "embed", "model": "minilm"}])
    matcher = glob_matcher(catalog)
    query = {"type": "chat", "model": "llama-70b", "prefer_region": "eu"}
    assert {c.id for c in candidates(registry, query, matcher)} == {"r-us", "r-eu"}
    assert choose(registry, RouteRequest(query), matcher, pipeline).id == "r-eu"
    assert choose(registry, RouteRequest({"type": "chat", "model": "llama-70b"}), matcher, pipeline).id == "r-us"
