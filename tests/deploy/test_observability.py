"""Prometheus scrape config and alert rules, Grafana provisioning and dashboards, the OpenTelemetry Collector config.

Every PromQL expression is parsed (promql-parser, and promtool when installed) and may only name metrics that the
code defines or that kafka-exporter and Prometheus provide.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import promql_parser
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
EXTERNAL_METRICS = {"kafka_consumergroup_lag", "kafka_topic_partition_current_offset", "up"}
# Grafana's template variables, replaced by what Grafana would put there before the query is parsed
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node, *_):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def check_expression(expr: str, code_metrics: set[str]) -> set[str]:
    names = metric_names(expr)
    assert names, f"no metric in {expr!r}"
    unknown = names - code_metrics - EXTERNAL_METRICS
    assert not unknown, f"{expr!r} names metrics that nothing defines: {sorted(unknown)}"
    return names


def rules() -> list[dict]:
    return [rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found += [panel, *panel.get("panels", [])]
    return found


def grafana_expr(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


# --- Prometheus -----------------------------------------------------------------------------------------------

def test_prometheus_scrapes_every_service_and_the_kafka_exporter(services):
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {group["labels"]["service"]: group["targets"] for group in jobs["platform"]["static_configs"]}
    assert set(targets) == set(services)
    for name, service in services.items():
        assert targets[name] == [f"{name}:{service.port}"]
    assert jobs["platform"].get("metrics_path", "/metrics") == "/metrics"
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for job in ("kafka-exporter", "otel-collector"):
        host = jobs[job]["static_configs"][0]["targets"][0].split(":")[0]
        assert host in compose["services"], f"{job} scrapes {host}, which compose does not run"
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"] and RULES


def test_alert_rules_are_well_formed_and_name_real_metrics(code_metrics):
    alerts = rules()
    assert len({r["alert"] for r in alerts}) == len(alerts), "alert names must be unique"
    for rule in alerts:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"]
        if "for" in rule:
            promql_parser.parse_duration(rule["for"])
        check_expression(rule["expr"], code_metrics)


def test_alerts_cover_lag_dlq_growth_errors_and_delivery_failures(code_metrics):
    exprs = [r["expr"] for r in rules()]

    def covered(metric, also=""):
        return any(metric in metric_names(e) and also in e for e in exprs)

    assert covered("kafka_consumergroup_lag"), "consumer lag"
    assert covered("kafka_dead_lettered_total"), "records dead-lettered"
    assert covered("kafka_topic_partition_current_offset", "dlq"), "DLQ topics growing"
    assert covered("kafka_messages_consumed_total", 'outcome="dead_lettered"'), "consumer error rate"
    assert covered("ingest_requests_total"), "webhook error rate"
    assert covered("notify_deliveries_total"), "alert delivery failures"


def test_the_rule_validators_reject_a_broken_expression(code_metrics):
    with pytest.raises(Exception):
        promql_parser.parse("sum by (topic (rate(kafka_dead_lettered_total[5m]))")
    with pytest.raises(AssertionError):
        check_expression("rate(kafka_dead_letters_total[5m]) > 0", code_metrics)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian package prometheus)")
def test_promtool_accepts_the_config_and_rules_and_the_alerts_fire_as_tested():
    for args in (["check", "rules", *map(str, RULES)],
                 ["check", "config", "--syntax-only", str(DEPLOY / "prometheus" / "prometheus.yml")],
                 ["test", "rules", *map(str, sorted((DEPLOY / "prometheus" / "tests").glob("*.yml")))]):
        result = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


# --- Grafana --------------------------------------------------------------------------------------------------

def test_grafana_provisioning_points_at_the_dashboards_and_prometheus():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith("./"))
    provisioning = DEPLOY / "grafana" / "provisioning"
    providers = yaml.safe_load((provisioning / "dashboards" / "dashboards.yaml").read_text())["providers"]
    assert mounts["./grafana/dashboards"] == providers[0]["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "datasources.yaml").read_text())["datasources"]
    prometheus = next(s for s in sources if s["type"] == "prometheus")
    assert prometheus["url"] == "http://prometheus:9090"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_parse_and_name_real_metrics(path, code_metrics):
    dashboard = json.loads(path.read_text())
    sources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/datasources.yaml").read_text())["datasources"]
    uids = {s["uid"] for s in sources}
    all_panels = panels(dashboard)
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    queries = [p for p in all_panels if p["type"] != "row"]
    assert queries
    for panel in queries:
        assert panel["datasource"]["uid"] in uids
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            check_expression(grafana_expr(target["expr"]), code_metrics)
    for variable in dashboard["templating"]["list"]:
        inner = re.fullmatch(r"label_values\((.+), *\w+\)", variable["query"]["query"]).group(1)
        check_expression(inner, code_metrics)


def test_dashboards_show_lag_per_partition_throughput_errors_and_stage_latency():
    exprs = [t["expr"] for path in DASHBOARDS for p in panels(json.loads(path.read_text())) for t in p.get("targets", [])]
    parsed = [(e, metric_names(grafana_expr(e))) for e in exprs]

    def shown(metric, also=""):
        return any(metric in names and also in e for e, names in parsed)

    assert shown("kafka_consumergroup_lag", "partition"), "consumer lag per partition"
    assert shown("kafka_consumergroup_lag", "by (consumergroup)"), "consumer lag per group"
    assert shown("kafka_messages_published_total", "rate(") and shown("kafka_messages_consumed_total", "rate(")
    assert shown("kafka_dead_lettered_total") and shown("kafka_publish_errors_total")
    latency = {n.removesuffix("_bucket") for e, names in parsed if "histogram_quantile" in e for n in names}
    assert {"kafka_publish_duration_seconds", "kafka_process_duration_seconds", "ingest_publish_duration_seconds",
            "enrich_model_latency_seconds", "notify_delivery_latency_seconds"} <= latency


# --- OpenTelemetry Collector ----------------------------------------------------------------------------------

def test_the_collector_pipelines_only_use_defined_components():
    config = yaml.safe_load((DEPLOY / "otel" / "collector.yaml").read_text())
    connectors = set(config.get("connectors", {}))
    pipelines = config["service"]["pipelines"]
    for name, pipeline in pipelines.items():
        for role in ("receivers", "processors", "exporters"):
            defined = set(config.get(role, {})) | (connectors if role != "processors" else set())
            missing = set(pipeline.get(role, [])) - defined
            assert not missing, f"pipeline {name} uses undefined {role}: {missing}"
    for connector in connectors:  # a connector is an exporter of one pipeline and a receiver of another
        assert any(connector in p.get("exporters", []) for p in pipelines.values())
        assert any(connector in p.get("receivers", []) for p in pipelines.values())
    assert set(config["service"].get("extensions", [])) <= set(config.get("extensions", {}))
    assert "otlp" in pipelines["traces"]["receivers"]
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert config["exporters"]["otlp/jaeger"]["endpoint"].startswith("jaeger:")
    prometheus_port = config["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    assert f"otel-collector:{prometheus_port}" in [t for j in scrape for g in j["static_configs"] for t in g["targets"]]
