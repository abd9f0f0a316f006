"""Where the AWS backend's bucket, prefix, region and AMI come from."""

from __future__ import annotations

import boto3
import pytest

from launcher.backends.aws.config import resolve_ami, resolve_settings
from launcher.errors import BackendError, SpecError
from tests.launcher.aws.conftest import AMI_PARAMETER

pytestmark = pytest.mark.aws


def test_precedence_argument_env_config(monkeypatch):
    config = {"aws": {"bucket": "from-config", "prefix": "p/q", "region": "eu-west-1"}}
    monkeypatch.delenv("LAUNCH_AWS_BUCKET", raising=False)
    s = resolve_settings(config=config)
    assert (s.bucket, s.prefix, s.region, s.root_url) == (
        "from-config", "p/q", "eu-west-1", "s3://from-config/p/q")  # fmt: skip
    monkeypatch.setenv("LAUNCH_AWS_BUCKET", "from-env")
    assert resolve_settings(config=config).bucket == "from-env"
    assert resolve_settings(bucket="from-arg", config=config).bucket == "from-arg"


def test_defaults_prefix_and_standard_region_chain(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    s = resolve_settings(bucket="bkt", config={})
    assert (s.prefix, s.region, s.ami) == ("launch", "ap-south-1", None)


def test_missing_bucket_names_both_ways_to_set_it(monkeypatch):
    monkeypatch.delenv("LAUNCH_AWS_BUCKET", raising=False)
    with pytest.raises(SpecError, match="LAUNCH_AWS_BUCKET or `launch config set aws.bucket"):
        resolve_settings(config={})


def test_missing_region_is_explained(monkeypatch):
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SpecError, match="no AWS region"):
        resolve_settings(bucket="bkt", config={})


def test_ami_from_ssm_parameter_or_configured(aws):
    ssm = boto3.client("ssm")
    s = resolve_settings(bucket="bkt", config={"aws": {"ami_parameter": AMI_PARAMETER}})
    expected = ssm.get_parameter(Name=AMI_PARAMETER)["Parameter"]["Value"]
    assert resolve_ami(s, ssm) == expected and expected.startswith("ami-")
    fixed = resolve_settings(bucket="bkt", config={"aws": {"ami": "ami-0123456789abcdef0"}})
    assert resolve_ami(fixed, None) == "ami-0123456789abcdef0"  # no SSM call at all
    missing = resolve_settings(bucket="bkt", config={"aws": {"ami_parameter": "/nope"}})
    with pytest.raises(BackendError, match="SSM parameter /nope .*ParameterNotFound"):
        resolve_ami(missing, ssm)


def test_node_addr_from_env_or_config_and_checked(monkeypatch):
    monkeypatch.delenv("LAUNCH_AWS_NODE_ADDR", raising=False)
    assert resolve_settings(bucket="bkt", region="r", config={}).node_addr is None
    config = {"aws": {"node_addr": "10.8.0.2"}}
    assert resolve_settings(bucket="bkt", region="r", config=config).node_addr == "10.8.0.2"
    monkeypatch.setenv("LAUNCH_AWS_NODE_ADDR", "127.0.0.1")
    assert resolve_settings(bucket="bkt", region="r", config=config).node_addr == "127.0.0.1"
    monkeypatch.setenv("LAUNCH_AWS_NODE_ADDR", "1.2.3.4; rm -rf /")
    with pytest.raises(SpecError, match="invalid aws.node_addr"):
        resolve_settings(bucket="bkt", region="r", config={})


def test_launch_config_set_aws_node_addr(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from launcher.cli.app import cli
    from launcher.config import load_config

    monkeypatch.setenv("LAUNCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LAUNCH_AWS_NODE_ADDR", raising=False)
    result = CliRunner().invoke(cli, ["config", "set", "aws.node_addr", "10.8.0.2"])
    assert result.exit_code == 0, result.output
    config = load_config()
    assert resolve_settings(bucket="bkt", region="r", config=config).node_addr == "10.8.0.2"
