"""deploy/: the Grafana dashboard names only metrics anyserve exposes, and the scrape config is sound."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from anyserve.metric_names import ALL, NAMES

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "anyserve-dashboard.json"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
METRIC = re.compile(r"\banyserve_[a-z0-9_]+")
HISTOGRAMS = {spec.name for spec in ALL if spec.kind == "histogram"}
SUFFIXES = ("_bucket", "_sum", "_count")


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _metric(token: str) -> str:
    """A series name as the table names it: a histogram's ``_bucket``/``_sum``/``_count`` series by the histogram."""
    for suffix in SUFFIXES:
        if token.endswith(suffix) and token[: -len(suffix)] in HISTOGRAMS:
            return token[: -len(suffix)]
    return token


def _names(expr: str) -> set[str]:
    return {_metric(token) for token in METRIC.findall(expr)}


def test_every_metric_a_panel_queries_is_one_anyserve_exposes():
    dashboard = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        exprs = [target["expr"] for target in panel["targets"]]
        assert exprs, f"panel {panel['title']!r} queries nothing"
        names = set().union(*map(_names, exprs))
        assert names, f"panel {panel['title']!r} queries no anyserve metric: {exprs}"
        unknown = names - NAMES
        assert not unknown, f"panel {panel['title']!r} queries metrics anyserve does not expose: {sorted(unknown)}"
        used |= names
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        assert _names(text) <= NAMES, variable["name"]
    # Histograms are queried by their buckets, as histogram_quantile needs.
    raw = DASHBOARD.read_text()
    for name in used & HISTOGRAMS:
        assert f"{name}_bucket" in raw, name


def test_the_dashboard_covers_the_router_and_the_replicas():
    used = set().union(
        *(_names(t["expr"]) for p in _panels(json.loads(DASHBOARD.read_text())) for t in p.get("targets", []))
    )
    must = {
        "anyserve_router_requests_total",
        "anyserve_router_request_duration_seconds",
        "anyserve_router_time_to_first_token_seconds",
        "anyserve_router_inter_token_latency_seconds",
        "anyserve_router_generation_tokens_total",
        "anyserve_router_requests_in_flight",
        "anyserve_replica_requests_queued",
        "anyserve_worker_state",
        "anyserve_worker_switches_total",
        "anyserve_objects_bytes",
        "anyserve_router_replicas",
        "anyserve_router_capabilities",
        "anyserve_router_routing_decision_seconds",
    }
    assert must <= NAMES  # the list above is itself only names from the table
    assert must <= used, sorted(must - used)


def test_the_dashboard_is_importable_shaped():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in _panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in dashboard["templating"]["list"])


def test_the_scrape_config_scrapes_router_and_replicas_with_the_admin_token():
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"anyserve-router", "anyserve-replicas"}
    for job in jobs.values():
        assert job["metrics_path"] == "/metrics"
        auth = job["authorization"]
        assert auth.get("type", "Bearer") == "Bearer"
        assert auth["credentials_file"].endswith("admin.token")
        assert "credentials" not in auth  # the token itself never goes into the file
        assert job.get("static_configs") or job.get("file_sd_configs")


def test_every_label_a_panel_groups_or_filters_by_is_one_its_metrics_carry():
    labels_of = {spec.name: set(spec.labels) for spec in ALL}
    scrape_labels = {"le", "instance", "job"}  # the histogram's buckets; Prometheus's own target labels
    for panel in _panels(json.loads(DASHBOARD.read_text())):
        for target in panel.get("targets", []):
            expr = target["expr"]
            carried = set().union(*(labels_of[name] for name in _names(expr))) | scrape_labels
            grouped = {label.strip() for group in re.findall(r"by \(([^)]*)\)", expr) for label in group.split(",")}
            filtered = {
                m for selector in re.findall(r"\{([^}]*)\}", expr) for m in re.findall(r"(\w+)\s*[=!]", selector)
            }
            legend = set(re.findall(r"\{\{(\w+)\}\}", target.get("legendFormat", "")))
            assert grouped | filtered <= carried, (panel["title"], expr, sorted((grouped | filtered) - carried))
            assert legend <= carried, (panel["title"], sorted(legend - carried))
