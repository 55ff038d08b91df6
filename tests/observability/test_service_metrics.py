"""Each service's /metrics after real traffic: valid for promtool, and the counters moved."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from obs_support import run_promtool
from lambdascope.v1 import jobs_pb2


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def moved(traffic, service: str, name: str, **labels: str) -> float:
    """How much a sample grew during the traffic (the platform may be shared with other tests)."""
    return (value(traffic.scrapes[service], name, **labels)
            - value(traffic.before[service], name, **labels))


def test_the_traffic_ran(traffic):
    assert traffic.audit.state == jobs_pb2.JOB_STATE_SUCCEEDED, traffic.audit.message
    assert traffic.training.state == jobs_pb2.JOB_STATE_SUCCEEDED, traffic.training.message


@pytest.mark.parametrize("service", ["registry", "trainer", "estimator"])
def test_promtool_check_metrics(promtool, traffic, service):
    text = traffic.scrapes[service]
    result = run_promtool(promtool, "check", "metrics", stdin=text)
    assert result.returncode == 0, result.stdout + result.stderr


def test_job_and_audit_metrics_moved(traffic):
    estimator = traffic.scrapes["estimator"]
    assert moved(traffic, "estimator", "lambdascope_jobs_finished_total", kind="audit",
                 state="succeeded") >= 1
    assert moved(traffic, "estimator", "lambdascope_job_duration_seconds_count", kind="audit",
                 state="succeeded") >= 1
    assert value(estimator, "lambdascope_jobs", kind="audit", state="succeeded") >= 1
    assert ("lambdascope_jobs_queued", frozenset({("kind", "audit")})) in samples(estimator)
    verdicts = {v: moved(traffic, "estimator", "lambdascope_audits_total", verdict=v)
                for v in ("ok", "warning", "failed", "error")}
    assert sum(verdicts[v] for v in ("ok", "warning", "failed")) >= 1, verdicts
    assert moved(traffic, "estimator", "lambdascope_audit_chain_steps_per_second_count") >= 1
    assert moved(traffic, "estimator", "lambdascope_audit_chain_steps_per_second_sum") > 0


def test_training_metrics_moved(traffic):
    trainer = traffic.scrapes["trainer"]
    assert moved(traffic, "trainer", "lambdascope_jobs_finished_total", kind="train",
                 state="succeeded") >= 1
    assert value(trainer, "lambdascope_jobs", kind="train", state="succeeded") >= 1
    assert moved(traffic, "trainer", "lambdascope_training_steps_per_second_count") >= 1
    assert moved(traffic, "trainer", "lambdascope_training_steps_per_second_sum") > 0


def test_registry_metrics_moved(traffic):
    registry = traffic.scrapes["registry"]
    assert moved(traffic, "registry", "lambdascope_registry_transferred_bytes_total",
                 direction="upload") > 0
    assert moved(traffic, "registry", "lambdascope_registry_transferred_bytes_total",
                 direction="download") > 0
    assert value(registry, "lambdascope_registry_stored_bytes") > 0
    assert value(registry, "lambdascope_registry_stored_objects") >= 2
    assert value(registry, "lambdascope_registry_records", kind="report") >= 1
    assert value(registry, "lambdascope_registry_records", kind="model_version") >= 2
    # nothing went wrong on the way
    for service in ("registry", "trainer", "estimator"):
        assert errors(traffic.scrapes[service]) == errors(traffic.before[service]), service


def errors(text: str) -> float:
    return sum(v for (name, _), v in samples(text).items()
               if name in ("lambdascope_database_errors_total",
                           "lambdascope_object_store_errors_total"))
