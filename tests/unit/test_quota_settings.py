"""Quota settings: per-team overrides on top of the defaults, and bad settings stop the service
with a message that names what is wrong."""
from __future__ import annotations

import pytest

from lambdascope import config, quotas


def settings(**values) -> config.Settings:
    return config.Settings(service="estimator", **values)


def test_teams_get_the_defaults_and_their_overrides():
    q = quotas.Quotas(settings(quota_running_jobs=2, quota_queued_jobs=10,
                               team_quotas='{"vision": {"running_jobs": 4}, "nlp": {"stored_bytes": 7}}'))
    assert q.of("anyone") == quotas.Quota(2, 10, 0)
    assert q.of("vision") == quotas.Quota(4, 10, 0)
    assert q.of("nlp") == quotas.Quota(2, 10, 7)


def test_the_config_file_may_write_team_quotas_as_a_mapping(tmp_path, monkeypatch):
    path = tmp_path / "lambdascope.yaml"
    path.write_text("quota_queued_jobs: 3\nteam_quotas:\n  vision:\n    queued_jobs: 5\n")
    monkeypatch.setenv("LAMBDASCOPE_CONFIG", str(path))
    q = quotas.Quotas(config.load("estimator"))
    assert (q.of("vision").queued_jobs, q.of("other").queued_jobs) == (5, 3)


@pytest.mark.parametrize("text, says", [
    ("{vision: [", "not JSON or YAML"),
    ("[1, 2]", "must map team names"),
    ('{"vision": 4}', "limits of team 'vision' must be a mapping"),
    ('{"vision": {"gpus": 1}}', "unknown limit 'gpus'"),
    ('{"vision": {"running_jobs": -1}}', "whole number >= 0"),
    ('{"vision": {"stored_bytes": 1.5}}', "whole number >= 0"),
])
def test_bad_team_quotas_stop_the_service_with_a_reason(text, says):
    with pytest.raises(SystemExit) as stopped:
        quotas.Quotas(settings(team_quotas=text))
    assert says in str(stopped.value)


def test_a_negative_default_is_refused():
    with pytest.raises(SystemExit, match="queued_jobs must be a whole number"):
        quotas.Quotas(settings(quota_queued_jobs=-1))
