"""launcher.config: LAUNCH_HOME and `launch config` settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher import config
from launcher.errors import LaunchError


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LAUNCH_HOME", str(tmp_path / "h"))
    return tmp_path / "h"


def test_launch_home_from_env_and_default(home, monkeypatch):
    assert config.launch_home() == home
    monkeypatch.delenv("LAUNCH_HOME")
    assert config.launch_home() == Path.home() / ".launch"


def test_set_get_list_unset_round_trip(home):
    assert config.load_config() == {}
    config.set_setting("aws.bucket", "my-bucket")
    config.set_setting("aws.region", "eu-west-1")
    config.set_setting("defaults.max_nodes", "3")
    config.set_setting("aws.spot", "true")
    assert config.get_setting("aws.bucket") == "my-bucket"
    assert config.get_setting("defaults.max_nodes") == 3  # YAML-typed
    assert config.get_setting("aws.spot") is True
    assert config.get_setting("aws.missing", "dflt") == "dflt"
    assert config.flatten(config.load_config()) == {
        "aws.bucket": "my-bucket", "aws.region": "eu-west-1", "aws.spot": True,
        "defaults.max_nodes": 3,
    }  # fmt: skip
    assert (home / "config.yaml").read_text().startswith("aws:")
    assert config.unset_setting("aws.bucket") is True
    assert config.unset_setting("aws.bucket") is False
    assert config.get_setting("aws.bucket") is None


def test_values_that_look_like_structures_stay_text():
    config.set_setting("aws.ami", "[not, a, list]")
    assert config.get_setting("aws.ami") == "[not, a, list]"


@pytest.mark.parametrize("key", ["bucket", "AWS.bucket", "aws..bucket", "aws.bucket-name", ""])
def test_bad_keys_are_one_clear_error(key):
    with pytest.raises(config.ConfigError, match="SECTION.NAME"):
        config.set_setting(key, "x")


def test_corrupt_config_file_is_a_launch_error(home):
    home.mkdir(parents=True)
    (home / "config.yaml").write_text("aws: [unclosed\n")
    with pytest.raises(LaunchError, match="not valid YAML"):
        config.load_config()
    (home / "config.yaml").write_text("- a list\n")
    with pytest.raises(LaunchError, match="mapping"):
        config.load_config()


def test_env_float(monkeypatch):
    assert config.env_float("LAUNCH_TEST_X", 2.5) == 2.5
    monkeypatch.setenv("LAUNCH_TEST_X", "0.25")
    assert config.env_float("LAUNCH_TEST_X", 2.5) == 0.25
    monkeypatch.setenv("LAUNCH_TEST_X", "soon")
    with pytest.raises(LaunchError, match="LAUNCH_TEST_X"):
        config.env_float("LAUNCH_TEST_X", 1)
