"""The user-data script: its steps, and that every value in it is data, never code."""

from __future__ import annotations

import subprocess

import pytest

from launcher.backends.aws.userdata import (
    BOOT_GRACE_S,
    DEFAULT_HARD_LIMIT_S,
    END_OF_VALUES,
    UserDataValues,
    assignments,
    build_user_data,
)
from launcher.errors import SpecError

pytestmark = pytest.mark.aws

HOSTILE = [
    "it's",
    'say "hi"',
    "$(touch CANARY)",
    "`touch CANARY`",
    "a; touch CANARY",
    "line1\nline2; touch CANARY",
    "../../etc/passwd",
    "$HOME ${PATH} \\ * ? ~",
    "'; touch CANARY; echo '",
]


def values(**over) -> UserDataValues:
    fields = dict(
        root_url="s3://bkt/launch", run="run-1", node="node-0", region="us-east-1", max_runtime=600
    )
    fields.update(over)
    return UserDataValues(**fields)


def test_script_is_valid_bash_with_steps_in_order():
    script = build_user_data(values())
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    order = [
        'shutdown -h "+$LAUNCH_HARD_LIMIT_MIN"',
        "trap ",
        'aws s3 cp --only-show-errors "$LAUNCH_CODE_URL"',
        "-m pip install",
        "-m launcher.node.agent",
    ]
    positions = [script.index(s) for s in order]
    assert positions == sorted(positions)
    assert "--interruption imds" in script
    assert "LAUNCH_CODE_URL=s3://bkt/launch/runs/run-1/code.tar.gz" in script
    # no secret of the user's goes onto the instance
    assert "AWS_SECRET_ACCESS_KEY" not in script and "testing" not in script


def test_hard_limit_covers_every_attempt_plus_grace():
    assert values(max_runtime=600, attempts=3).hard_limit_minutes() == (1800 + BOOT_GRACE_S) // 60
    assert (
        values(max_runtime=None).hard_limit_minutes() == (DEFAULT_HARD_LIMIT_S + BOOT_GRACE_S) // 60
    )
    script = build_user_data(values(max_runtime=None))
    assert "LAUNCH_MAX_RUNTIME=''" in script


@pytest.mark.parametrize("bad", [{"run": "Run"}, {"run": "a;b"}, {"run": "$(x)"},
                                 {"node": "../n"}, {"root_url": "file:///x"},
                                 {"max_runtime": 0}])  # fmt: skip
def test_invalid_values_are_refused(bad):
    with pytest.raises(SpecError):
        build_user_data(values(**bad))


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_values_come_out_literally(tmp_path, hostile):
    """Run the assignment block in bash with an empty PATH: each value prints back unchanged and
    nothing runs (no canary file appears)."""
    v = values(root_url=f"s3://bkt/{hostile}", region=hostile, work_dir=hostile)
    block = assignments(v)
    script = block + '\nprintf "%s\\0" "$LAUNCH_ROOT" "$LAUNCH_REGION" "$LAUNCH_WORK_DIR"'
    empty = tmp_path / "empty-path"
    empty.mkdir()
    out = subprocess.run(
        ["/bin/bash", "-c", script],
        env={"PATH": str(empty)},
        cwd=tmp_path,
        capture_output=True,
        check=True,
    )
    assert out.stdout.decode().split("\0")[:3] == [f"s3://bkt/{hostile}", hostile, hostile]
    assert not (tmp_path / "CANARY").exists()
    assert out.stderr == b""


def test_values_only_reach_the_assignment_block():
    script = build_user_data(values())
    body = script.split(END_OF_VALUES, 1)[1]
    for literal in ("run-1", "node-0", "s3://bkt", "us-east-1"):
        assert literal not in body


def test_gang_script_names_every_node_and_takes_its_own_by_launch_index():
    script = build_user_data(values(node="node-4", count=3))
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert "LAUNCH_NODES='node-4 node-5 node-6'" in script
    assert "LAUNCH_NODE_ADDR=''" in script  # no aws.node_addr: IMDS local-ipv4
    body = script.split(END_OF_VALUES, 1)[1]
    assert "meta-data/$1" in body and "ami-launch-index" in body and "local-ipv4" in body
    # the name is known (or the script has given up) before anything is fetched
    assert body.index("ami-launch-index") < body.index('aws s3 cp --only-show-errors "$LAUNCH_CODE')
    assert body.index("trap launch_power_off EXIT") < body.index("ami-launch-index")
    assert '--addr "$LAUNCH_NODE_ADDR"' in body
    assert "node-4" not in body


def test_node_addr_setting_is_a_quoted_value():
    script = build_user_data(values(node_addr="127.0.0.1"))
    assert "LAUNCH_NODE_ADDR=127.0.0.1" in script and "LAUNCH_NODES=node-0" in script


@pytest.mark.parametrize("bad", [{"node": "head", "count": 2}, {"count": 0}, {"count": True}])
def test_invalid_gangs_are_refused(bad):
    with pytest.raises(SpecError):
        build_user_data(values(**bad))
