"""Per-team quotas: how many jobs a team runs at once and keeps waiting on a service, and how
many bytes its records hold in the registry.

Every team gets the defaults (`quota_running_jobs`, `quota_queued_jobs`, `quota_stored_bytes`;
0 means no limit); `team_quotas` overrides them per team, as a JSON or YAML mapping:
`{"vision": {"running_jobs": 4, "stored_bytes": 50000000000}}`. A job beyond a team's running
limit waits in the queue while other teams' jobs start; a start beyond its queued limit, or an
upload beyond its bytes, answers RESOURCE_EXHAUSTED naming the limit and its value. Retrying
does not help until the team's own work finishes, so that answer tells clients not to retry.
"""
from __future__ import annotations

import dataclasses

import yaml

from lambdascope import errors
from lambdascope.config import Settings

FIELDS = ("running_jobs", "queued_jobs", "stored_bytes")


@dataclasses.dataclass(frozen=True)
class Quota:
    """One team's limits; 0: no limit."""

    running_jobs: int = 0
    queued_jobs: int = 0
    stored_bytes: int = 0


class Quotas:
    """The quota of each team, from the settings (checked once, when the service starts)."""

    def __init__(self, settings: Settings):
        self.default = Quota(settings.quota_running_jobs, settings.quota_queued_jobs,
                             settings.quota_stored_bytes)
        _check("the default quota", dataclasses.asdict(self.default))
        self.teams = {team: dataclasses.replace(self.default, **limits)
                      for team, limits in _parse(settings.team_quotas).items()}

    def of(self, team: str) -> Quota:
        return self.teams.get(team, self.default)


def exceeded(message: str) -> errors.ResourceExhausted:
    """RESOURCE_EXHAUSTED that clients should not retry (the team's own work must end first)."""
    return errors.ResourceExhausted(message, retryable=False, reason="quota")


def _parse(text: str) -> dict[str, dict[str, int]]:
    if not text.strip():
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SystemExit(f"LAMBDASCOPE_TEAM_QUOTAS is not JSON or YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SystemExit("LAMBDASCOPE_TEAM_QUOTAS must map team names to their limits, e.g. "
                         '{"vision": {"running_jobs": 4}}')
    for team, limits in data.items():
        if not isinstance(limits, dict):
            raise SystemExit(f"LAMBDASCOPE_TEAM_QUOTAS: the limits of team {team!r} must be a "
                             f"mapping of {', '.join(FIELDS)}")
        _check(f"LAMBDASCOPE_TEAM_QUOTAS, team {team!r}", limits)
    return {str(team): limits for team, limits in data.items()}


def _check(where: str, limits: dict) -> None:
    for name, value in limits.items():
        if name not in FIELDS:
            raise SystemExit(f"{where}: unknown limit {name!r}; known: {', '.join(FIELDS)}")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SystemExit(f"{where}: {name} must be a whole number >= 0 (0: no limit), "
                             f"not {value!r}")
