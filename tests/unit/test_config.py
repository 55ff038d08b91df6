"""Settings from defaults, a YAML file, the environment and overrides, in that rising order."""
from __future__ import annotations

import os
import pathlib

import pytest

from lambdascope import config


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No LAMBDASCOPE_* variable of the machine running the tests may leak in."""
    for name in list(os.environ):
        if name.startswith(config.ENV_PREFIX):
            monkeypatch.delenv(name)


def _config_file(tmp_path: pathlib.Path, text: str, monkeypatch) -> pathlib.Path:
    path = tmp_path / "lambdascope.yaml"
    path.write_text(text)
    monkeypatch.setenv("LAMBDASCOPE_CONFIG", str(path))
    return path


def test_defaults():
    settings = config.load("registry")
    assert (settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key) == ("", "", "")
    assert settings.s3_secure is True and settings.s3_region == ""
    assert settings.gc_interval_seconds == 3600.0 and settings.staging_ttl_seconds == 86400.0
    assert settings.default_owner == "default" and settings.presign_seconds == 3600


def test_overrides_beat_environment_beat_file_beat_defaults(tmp_path, monkeypatch):
    _config_file(tmp_path, (
        "object_store: s3://models/team-a\n"
        "s3_endpoint: minio:9000\n"
        "s3_secure: false\n"
        "gc_interval_seconds: 0\n"
        "presign_seconds: 60\n"
        "default_owner: team-a\n"
        f"data_dir: {tmp_path / 'data'}\n"
    ), monkeypatch)
    monkeypatch.setenv("LAMBDASCOPE_S3_ENDPOINT", "s3.internal:443")
    monkeypatch.setenv("LAMBDASCOPE_PRESIGN_SECONDS", "120")
    monkeypatch.setenv("LAMBDASCOPE_S3_SECRET_KEY", "from-env")
    settings = config.load("registry", presign_seconds=30, default_owner=None)

    assert settings.object_store == "s3://models/team-a"  # file
    assert settings.s3_secure is False and settings.gc_interval_seconds == 0.0  # file, typed
    assert isinstance(settings.gc_interval_seconds, float)
    assert settings.data_dir == tmp_path / "data"
    assert settings.default_owner == "team-a"  # a None override leaves the file's value
    assert settings.s3_endpoint == "s3.internal:443"  # environment over file
    assert settings.s3_secret_key == "from-env"
    assert settings.presign_seconds == 30  # override over environment
    assert settings.staging_ttl_seconds == 86400.0  # default


def test_an_empty_file_changes_nothing(tmp_path, monkeypatch):
    _config_file(tmp_path, "# nothing yet\n", monkeypatch)
    assert config.load("registry") == config.Settings(service="registry")


def test_an_unknown_key_names_itself_and_the_file(tmp_path, monkeypatch):
    path = _config_file(tmp_path, "object_store: s3://m\ns3_endpiont: minio:9000\n", monkeypatch)
    with pytest.raises(SystemExit, match=f"{path}.*'s3_endpiont'"):
        config.load("registry")


@pytest.mark.parametrize("line, field", [
    ("gc_interval_seconds: soon", "gc_interval_seconds"),
    ("presign_seconds: 1.5", "presign_seconds"),
    ("s3_secure: 'no'", "s3_secure"),  # a string, not a YAML boolean
    ("s3_access_key: 12345", "s3_access_key"),  # a number where a string belongs
    ("data_dir: [a, b]", "data_dir"),
])
def test_a_wrong_type_in_the_file_names_the_field(tmp_path, monkeypatch, line, field):
    _config_file(tmp_path, line + "\n", monkeypatch)
    with pytest.raises(SystemExit, match=f"'{field}'"):
        config.load("registry")


@pytest.mark.parametrize("text", ["- a list\n", "object_store: [unclosed\n"])
def test_a_file_that_is_no_mapping_is_refused(tmp_path, monkeypatch, text):
    path = _config_file(tmp_path, text, monkeypatch)
    with pytest.raises(SystemExit, match=str(path)):
        config.load("registry")


def test_a_missing_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMBDASCOPE_CONFIG", str(tmp_path / "absent.yaml"))
    with pytest.raises(SystemExit, match="absent.yaml"):
        config.load("registry")


def test_environment_booleans_and_bad_values(monkeypatch):
    for raw, expected in [("false", False), ("0", False), ("No", False), ("TRUE", True),
                          ("1", True), ("on", True)]:
        monkeypatch.setenv("LAMBDASCOPE_S3_SECURE", raw)
        assert config.load("registry").s3_secure is expected
    monkeypatch.setenv("LAMBDASCOPE_S3_SECURE", "maybe")
    with pytest.raises(SystemExit, match="LAMBDASCOPE_S3_SECURE"):
        config.load("registry")
    monkeypatch.setenv("LAMBDASCOPE_S3_SECURE", "true")
    monkeypatch.setenv("LAMBDASCOPE_PRESIGN_SECONDS", "an hour")
    with pytest.raises(SystemExit, match="LAMBDASCOPE_PRESIGN_SECONDS"):
        config.load("registry")


def test_to_env_reproduces_every_field_without_the_file(tmp_path, monkeypatch):
    settings = config.load(
        "registry", data_dir=tmp_path, object_store="s3://models/x", s3_endpoint="minio:9000",
        s3_access_key="ak", s3_secret_key="sk", s3_secure=False, s3_region="eu-west-1",
        gc_interval_seconds=0.0, staging_ttl_seconds=120.5, default_owner="team-b",
        presign_seconds=900)
    env = config.to_env(settings)
    assert {f"LAMBDASCOPE_{f.name.upper()}" for f in config.dataclasses.fields(config.Settings)
            if f.name != "service"} <= env.keys()
    # A child inherits the parent's LAMBDASCOPE_CONFIG: to_env must win over the file, even
    # for a field whose empty value the environment cannot express (job_image here).
    _config_file(tmp_path, "job_image: from-file\npresign_seconds: 5\n", monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # ... every field but the credentials, which a child never gets
    assert config.load("registry") == config.dataclasses.replace(
        settings, **{name: "" for name in config.WITHHELD})


def test_to_env_never_passes_a_credential_on(tmp_path):
    settings = config.load("registry", data_dir=tmp_path, admin_key="lsk_" + "0" * 16 + "_" + "a" * 43,
                           s3_access_key="ak-value", s3_secret_key="sk-value",
                           database_url="postgresql://u:pw-value@db/x")
    env = config.to_env(settings)
    for name in ("ADMIN_KEY", "S3_ACCESS_KEY", "S3_SECRET_KEY", "DATABASE_URL"):
        assert env[f"LAMBDASCOPE_{name}"] == ""
    for secret in (settings.admin_key, "ak-value", "sk-value", "pw-value"):
        assert secret not in "".join(env.values())
