"""Multi-node experiments on AWS, against moto: one run_instances per gang (MinCount=MaxCount=N),
nodes named by their launch index, the run's cluster placement group, the security group's one
self-referencing rule, replacements of a gang's lost nodes within the node budget, and a 2-node
gloo all-reduce whose two instances are played from their real user-data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from launcher.backends.aws import AwsBackend, node_budget
from launcher.backends.aws.ec2 import placement_group_name
from launcher.storage import records
from tests.launcher.aws.conftest import BUCKET
from tests.launcher.aws.helpers import (
    FakeImds,
    calls_log,
    launch_cli,
    make_project,
    play_instance,
    prepare,
    start_instance,
    user_data_of,
)

pytestmark = pytest.mark.aws

REPO = Path(__file__).resolve().parents[3]


def ec2_error(code: str, op: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, op)


class CapturingEc2:
    """The real (moto) EC2 client, recording every run_instances request; and, since moto
    (5.2) has no placement groups, EC2's placement-group calls as EC2 documents them: create
    (Duplicate if it exists), describe, delete (Unknown if missing, InUse while an instance that
    was launched into it is not terminated)."""

    def __init__(self, real):
        self.real = real
        self.requests: list[dict] = []
        self.groups: dict[str, dict] = {}
        self.members: dict[str, list[str]] = {}  # group -> instance ids launched into it
        self.deleted: list[str] = []

    def run_instances(self, **kw):
        self.requests.append(kw)
        group = kw.get("Placement", {}).get("GroupName")
        if group and not kw.get("DryRun") and group not in self.groups:
            raise ec2_error("InvalidPlacementGroup.Unknown", "RunInstances")
        resp = self.real.run_instances(**kw)
        if group:
            self.members.setdefault(group, []).extend(i["InstanceId"] for i in resp["Instances"])
        return resp

    def launches(self) -> list[dict]:
        return [r for r in self.requests if not r.get("DryRun")]

    def create_placement_group(self, GroupName, Strategy, TagSpecifications=()):
        if GroupName in self.groups:
            raise ec2_error("InvalidPlacementGroup.Duplicate", "CreatePlacementGroup")
        tags = [t for spec in TagSpecifications for t in spec["Tags"]]
        self.groups[GroupName] = {"GroupName": GroupName, "Strategy": Strategy,
                                  "State": "available", "Tags": tags}  # fmt: skip
        return {"PlacementGroup": self.groups[GroupName]}

    def describe_placement_groups(self, GroupNames):
        return {"PlacementGroups": [self.groups[n] for n in GroupNames if n in self.groups]}

    def delete_placement_group(self, GroupName):
        if GroupName not in self.groups:
            raise ec2_error("InvalidPlacementGroup.Unknown", "DeletePlacementGroup")
        ids = self.members.get(GroupName) or []
        if ids:
            desc = self.real.describe_instances(InstanceIds=ids)["Reservations"]
            if any(i["State"]["Name"] != "terminated" for r in desc for i in r["Instances"]):
                raise ec2_error("InvalidPlacementGroup.InUse", "DeletePlacementGroup")
        del self.groups[GroupName]
        self.deleted.append(GroupName)
        return {}

    def __getattr__(self, name):
        return getattr(self.real, name)


def instances(run: str) -> list[dict]:
    pages = boto3.client("ec2").describe_instances(
        Filters=[{"Name": "tag:launch:run", "Values": [run]}]
    )["Reservations"]
    return [i for r in pages for i in r["Instances"]]


def tags(inst: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}


def statuses(storage, run: str) -> dict[str, dict]:
    record = storage.read_json(f"runs/{run}/run.json")
    return {e["id"]: records.read_status(storage, run, e["id"]) for e in record["experiments"]}


def aws_cli(*args: str, endpoint: str) -> dict:
    """The real aws CLI of the venv (awscli is a dev dependency), against moto."""
    cli = Path(sys.executable).parent / "aws"
    proc = subprocess.run([str(cli), *args, "--endpoint-url", endpoint, "--output", "json"],
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return json.loads(proc.stdout)


# -- submit: one request per gang -----------------------------------------------------------------
def test_two_experiments_of_two_nodes_are_two_requests_of_two(aws, tmp_path):
    ec2 = CapturingEc2(boto3.client("ec2"))
    backend = AwsBackend(clients={"ec2": ec2}, profile_wait_s=0)
    run = prepare(backend, make_project(tmp_path / "p"), "gangs", ["--lr", "[0.1, 0.2]"],
                  nodes=2, max_nodes=4, gpus=0)  # fmt: skip
    launches = ec2.launches()
    assert [(r["MinCount"], r["MaxCount"]) for r in launches] == [(2, 2), (2, 2)]
    assert "Placement" not in launches[0]  # no --placement: no group
    # each request's instances share one reservation: started together or not at all
    found = instances(run)
    assert len(found) == 4
    by_reservation = {}
    for r in boto3.client("ec2").describe_instances(
        Filters=[{"Name": "tag:launch:run", "Values": [run]}]
    )["Reservations"]:
        by_reservation[r["ReservationId"]] = sorted(tags(i)["launch:node"] for i in r["Instances"])
    assert sorted(by_reservation.values()) == [["node-0", "node-1"], ["node-2", "node-3"]]
    for inst in found:
        t = tags(inst)
        first = "node-0" if t["launch:node"] in ("node-0", "node-1") else "node-2"
        # the request's tags name the gang; the launcher then names each instance by its index
        assert t["launch:gang"] == first and t["launch:gang-size"] == "2"
        assert t["launch:launch-index"] == str(inst["AmiLaunchIndex"])
        assert t["launch:node"] == f"node-{int(first[5:]) + inst['AmiLaunchIndex']}"
        assert t["Name"] == f"launch-gangs-{t['launch:node']}"
        script = user_data_of(inst["InstanceId"])
        assert f"LAUNCH_NODES='{first} node-{int(first[5:]) + 1}'" in script
        assert "LAUNCH_NODE_ADDR=127.0.0.1" in script  # aws.node_addr (see conftest)
    # N consecutive records, each with its instance and its launch index
    storage = backend.storage()
    for k in range(4):
        rec = storage.read_json(f"runs/{run}/nodes/node-{k}.json")
        assert rec["launch_index"] == k % 2 and rec["gang"] == (
            ["node-0", "node-1"] if k < 2 else ["node-2", "node-3"]
        )
        (inst,) = [i for i in found if i["InstanceId"] == rec["instance_id"]]
        assert inst["AmiLaunchIndex"] == k % 2
    infos = backend.nodes(run)
    assert [n.node_id for n in infos] == ["node-0", "node-1", "node-2", "node-3"]
    assert [n.extra["launch_index"] for n in infos] == [0, 1, 0, 1]


def test_untagged_gang_member_is_named_by_its_launch_index():
    """Between run_instances and create_tags (or if tagging failed), an instance still has a
    name: the request's first node plus its launch index."""
    from launcher.backends.aws.reconcile import node_name

    base = {"InstanceId": "i-1", "AmiLaunchIndex": 2,
            "Tags": [{"Key": "launch:gang", "Value": "node-4"},
                     {"Key": "launch:gang-size", "Value": "3"}]}  # fmt: skip
    assert node_name(base) == "node-6"
    assert node_name(dict(base, AmiLaunchIndex=3)) == "i-1"  # not one of the request's
    assert node_name(dict(base, Tags=[{"Key": "launch:node", "Value": "node-9"}])) == "node-9"


def test_gang_too_big_for_max_nodes_is_one_line_error(aws, tmp_path):
    project = make_project(tmp_path / "p")
    proc = launch_cli("run", "--backend", "aws", "--nodes", "3", "--max-nodes", "2", "--gpus", "0",
                      "train.py", cwd=project)  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--nodes 3 is more than --max-nodes 2" in lines[0], proc.stderr
    assert boto3.client("ec2").describe_instances()["Reservations"] == []


def test_placement_and_nodes_are_accepted_on_aws(aws, tmp_path):
    project = make_project(tmp_path / "p")
    proc = launch_cli("run", "--backend", "aws", "--nodes", "2", "--placement", "cluster",
                      "--gpus", "0", "--dry-run", "train.py", "--lr", "[0.1, 0.2]",
                      cwd=project)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert boto3.client("ec2").describe_instances()["Reservations"] == []  # a dry run


# -- placement group ------------------------------------------------------------------------------
def test_cluster_placement_group_is_made_used_and_deleted(aws, tmp_path):
    ec2 = CapturingEc2(boto3.client("ec2"))
    backend = AwsBackend(clients={"ec2": ec2}, profile_wait_s=0)
    run = prepare(backend, make_project(tmp_path / "p"), "placed", nodes=2, gpus=0,
                  placement="cluster")  # fmt: skip
    name = placement_group_name(backend.root_url, run)
    assert name.startswith("launch-placed-") and len(name) <= 255
    dry, launch = ec2.requests
    assert dry["DryRun"] and "Placement" not in dry  # the group does not exist yet then
    assert launch["Placement"] == {"GroupName": name}
    assert (launch["MinCount"], launch["MaxCount"]) == (2, 2)
    group = ec2.groups[name]
    assert group["Strategy"] == "cluster"
    assert {t["Key"]: t["Value"] for t in group["Tags"]}["launch:run"] == run
    assert len(instances(run)) == 2

    # idempotent: a replacement's launch finds the group there and uses it
    ec2.real.terminate_instances(InstanceIds=[i["InstanceId"] for i in instances(run)][:1])
    done = backend.reconcile(run, statuses(backend.storage(), run))
    assert [n.node_id for n in done.started] == ["node-2"]
    assert ec2.launches()[-1]["Placement"] == {"GroupName": name}
    assert (ec2.launches()[-1]["MinCount"], ec2.launches()[-1]["MaxCount"]) == (1, 1)
    assert list(ec2.groups) == [name]

    backend.delete(run)  # stop, then the group (moto terminates at once)
    assert ec2.deleted == [name] and ec2.groups == {}
    backend.delete(run)  # nothing left: no error


def test_placement_group_in_use_is_waited_for_then_reported():
    from launcher.backends.aws.provision import delete_placement_group
    from launcher.errors import BackendError

    class InUse:
        calls = 0

        def delete_placement_group(self, GroupName):
            self.calls += 1
            if self.calls < 3:
                raise ec2_error("InvalidPlacementGroup.InUse", "Delete")
            return {}

    slept: list[float] = []
    assert delete_placement_group(InUse(), "g", wait_s=60, sleep=slept.append) is True
    assert slept == [5.0, 5.0]
    with pytest.raises(BackendError, match="still shutting down, delete again"):
        delete_placement_group(InUse(), "g", wait_s=5, sleep=slept.append)


def test_placement_group_of_another_strategy_is_refused(aws):
    from launcher.backends.aws.provision import ensure_placement_group
    from launcher.errors import BackendError

    ec2 = CapturingEc2(boto3.client("ec2"))
    ec2.groups["g"] = {"GroupName": "g", "Strategy": "spread"}
    with pytest.raises(BackendError, match="strategy spread, not cluster"):
        ensure_placement_group(ec2, "g", [])
    assert ensure_placement_group(ec2, "h", []) == "h"
    assert ensure_placement_group(ec2, "h", []) == "h"  # again: found, not an error


# -- security group -------------------------------------------------------------------------------
def assert_only_self_rule(group: dict) -> None:
    gid = group["GroupId"]
    (perm,) = group["IpPermissions"]
    assert perm["IpProtocol"] == "-1"
    assert [p["GroupId"] for p in perm["UserIdGroupPairs"]] == [gid]
    assert not perm.get("IpRanges") and not perm.get("Ipv6Ranges") and not perm.get("PrefixListIds")
    assert "FromPort" not in perm or perm["FromPort"] in (-1, None)  # all ports, none named


def test_security_group_admits_only_itself_read_by_boto3_and_the_aws_cli(aws, tmp_path):
    backend = AwsBackend(profile_wait_s=0)
    run = prepare(backend, make_project(tmp_path / "p"), "sg", nodes=2, gpus=0)
    ids = {g["GroupId"] for i in instances(run) for g in i["SecurityGroups"]}
    (gid,) = ids
    ec2 = boto3.client("ec2")
    (group,) = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"]
    assert group["GroupName"] == "launch-nodes"
    assert_only_self_rule(group)
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}])[
        "SecurityGroupRules"
    ]
    inbound = [r for r in rules if not r["IsEgress"]]
    assert len(inbound) == 1 and inbound[0]["ReferencedGroupInfo"]["GroupId"] == gid
    assert "CidrIpv4" not in inbound[0] and "CidrIpv6" not in inbound[0]

    (cli_group,) = aws_cli("ec2", "describe-security-groups", "--group-ids", gid,
                           endpoint=aws)["SecurityGroups"]  # fmt: skip
    assert_only_self_rule(cli_group)
    # nothing reaches port 22 (or any port) from an address range
    assert not any(p.get("IpRanges") or p.get("Ipv6Ranges") for p in cli_group["IpPermissions"])

    # a second run reuses the group and adds nothing (the rule exists: no duplicate error)
    prepare(backend, make_project(tmp_path / "p"), "sg2")
    (again,) = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"]
    assert_only_self_rule(again)


def test_existing_group_gains_the_rule_and_loses_any_other(aws, tmp_path):
    """A group made before gangs (no rules), then tampered with (ssh from anywhere, all traffic
    from a range beside the self pair): the next submit leaves exactly the self rule."""
    ec2 = boto3.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
    gid = ec2.create_security_group(GroupName="launch-nodes", Description="launch nodes: no "
                                    "inbound access", VpcId=vpc["VpcId"])["GroupId"]  # fmt: skip
    backend = AwsBackend(profile_wait_s=0)
    prepare(backend, make_project(tmp_path / "p"), "old")
    (group,) = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"]
    assert_only_self_rule(group)  # gained

    ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
    ])  # fmt: skip
    (group,) = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"]
    assert len(group["IpPermissions"]) >= 2
    prepare(backend, make_project(tmp_path / "p"), "tampered")
    (group,) = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"]
    assert_only_self_rule(group)  # the others revoked, the self rule kept


# -- reconcile and the budget ---------------------------------------------------------------------
def test_lost_gang_member_gets_one_replacement_within_the_node_budget(aws, tmp_path):
    ec2 = CapturingEc2(boto3.client("ec2"))
    backend = AwsBackend(clients={"ec2": ec2}, profile_wait_s=0)
    run = prepare(backend, make_project(tmp_path / "p"), "lost", nodes=2, gpus=0)
    storage = backend.storage()
    spec = storage.read_json(f"runs/{run}/run.json")["spec"]
    # max_nodes (2) + 1 experiment x 1 try x 2 nodes: every node of every attempt replaced once
    assert node_budget(spec, 1) == 4
    by_node = {n.node_id: n for n in backend.nodes(run)}
    assert sorted(by_node) == ["node-0", "node-1"]

    # one rank's instance vanishes: one replacement, its own request of one (a partial gang:
    # the survivor waits in the gang's lobby, the newcomer takes the free seat)
    ec2.real.terminate_instances(InstanceIds=[by_node["node-1"].extra["instance_id"]])
    done = backend.reconcile(run, statuses(storage, run))
    assert [n.node_id for n in done.started] == ["node-2"]
    assert (ec2.launches()[-1]["MinCount"], ec2.launches()[-1]["MaxCount"]) == (1, 1)
    (inst,) = [i for i in instances(run) if tags(i).get("launch:node") == "node-2"]
    assert "LAUNCH_NODES=node-2\n" in user_data_of(inst["InstanceId"])
    assert backend.reconcile(run, statuses(storage, run)).started == []  # idempotent

    # the whole gang vanishes: a request of two, then the budget (4 nodes) is spent
    live = [n.extra["instance_id"] for n in backend.nodes(run) if n.live]
    ec2.real.terminate_instances(InstanceIds=live)
    done = backend.reconcile(run, statuses(storage, run))
    assert [n.node_id for n in done.started] == ["node-3"]  # 4 - 3 reserved: one left
    live = [n.extra["instance_id"] for n in backend.nodes(run) if n.live]
    ec2.real.terminate_instances(InstanceIds=live)
    done = backend.reconcile(run, statuses(storage, run))
    assert done.started == [] and "budget of 4 nodes is spent" in done.summary()


def test_dead_gang_is_replaced_by_one_request_of_its_size(aws, tmp_path):
    ec2 = CapturingEc2(boto3.client("ec2"))
    backend = AwsBackend(clients={"ec2": ec2}, profile_wait_s=0)
    run = prepare(backend, make_project(tmp_path / "p"), "whole", nodes=2, gpus=0, retries=1)
    ec2.real.terminate_instances(InstanceIds=[i["InstanceId"] for i in instances(run)])
    done = backend.reconcile(run, statuses(backend.storage(), run))
    assert sorted(n.node_id for n in done.started) == ["node-2", "node-3"]
    assert (ec2.launches()[-1]["MinCount"], ec2.launches()[-1]["MaxCount"]) == (2, 2)


# -- the instances' own part: user-data picks the node by launch index ----------------------------
def test_gang_member_that_cannot_tell_its_index_powers_off(aws, tmp_path):
    backend = AwsBackend(profile_wait_s=0)
    run = prepare(backend, make_project(tmp_path / "p"), "blind", nodes=2, gpus=0)
    blind = FakeImds()  # answers tokens and the spot notice, not ami-launch-index
    try:
        (inst, _) = sorted(instances(run), key=lambda i: i["AmiLaunchIndex"])
        env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": blind.endpoint}
        code, out = play_instance(inst["InstanceId"], tmp_path / "n", env)
    finally:
        blind.close()
    assert code != 0 and "cannot tell which of node-0 node-1 this instance is" in out, out
    calls = calls_log(tmp_path / "n").read_text().splitlines()
    assert calls[-1] == "shutdown -h now"
    assert "cannot tell" in backend.storage().read_text(
        f"runs/{run}/nodes/node-0-unplaced.boot.log"
    )


def test_without_node_addr_the_agent_gets_imds_local_ipv4(aws, tmp_path):
    """The default: each node's --addr is its private IPv4 from IMDSv2 (moto's made-up one)."""
    (tmp_path / "launch_home" / "config.yaml").write_text(
        (tmp_path / "launch_home" / "config.yaml")
        .read_text()
        .replace("  node_addr: 127.0.0.1\n", "")
    )
    project = make_project(tmp_path / "p")
    (project / "where.py").write_text(
        "import os, pathlib\n"
        "art = pathlib.Path(os.environ['LAUNCH_ARTIFACTS_DIR'])\n"
        "(art / 'ips.txt').write_text(os.environ['LAUNCH_NODE_IPS'])\n"
    )
    backend = AwsBackend(profile_wait_s=0)
    assert backend.settings.node_addr is None
    from launcher.runs import prepare_run
    from launcher.spec.jobspec import JobSpec

    spec = JobSpec.load(None, workdir=project, script="where.py", name="ipv4", backend="aws",
                        instance_type="g4dn.xlarge", gpus=0)  # fmt: skip
    run = prepare_run(spec, backend, workdir=project)
    (inst,) = instances(run)
    assert "LAUNCH_NODE_ADDR=''" in user_data_of(inst["InstanceId"])
    code, out = play_instance(inst["InstanceId"], tmp_path / "node-0")
    assert code == 0, out
    ip = inst["PrivateIpAddress"]
    assert f"address '{ip}'" in out
    key = records.exp_key(run, "exp-0", "artifacts", "ips.txt")
    assert backend.storage().read_text(key) == ip


# -- end to end: a 2-node gloo all-reduce from the instances' real user-data ----------------------
def test_two_node_allreduce_from_real_user_data(aws, tmp_path):
    project = make_project(tmp_path / "project")
    shutil.copy(REPO / "examples" / "allreduce.py", project / "allreduce.py")
    proc = launch_cli("run", "--backend", "aws", "--instance", "g4dn.xlarge", "--gpus", "0",
                      "--nodes", "2", "--max-runtime", "600", "--name", "ring", "allreduce.py",
                      cwd=project)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # one reservation of two: the request had MinCount=MaxCount=2 (read with the real aws CLI)
    desc = aws_cli("ec2", "describe-instances", "--filters", "Name=tag:launch:run,Values=ring",
                   endpoint=aws)  # fmt: skip
    (reservation,) = desc["Reservations"]
    found = sorted(reservation["Instances"], key=lambda i: i["AmiLaunchIndex"])
    assert [i["AmiLaunchIndex"] for i in found] == [0, 1]
    assert [tags(i)["launch:node"] for i in found] == ["node-0", "node-1"]
    assert len({g["GroupId"] for i in found for g in i["SecurityGroups"]}) == 1

    env = {"LAUNCH_GANG_POLL_S": "0.1"}
    procs = {tags(i)["launch:node"]: start_instance(i["InstanceId"], tmp_path / f"n{k}", env)
             for k, i in enumerate(found)}  # fmt: skip
    outs = {}
    for node, p in procs.items():
        outs[node], _ = p.communicate(timeout=300)
    for node, p in procs.items():
        assert p.returncode == 0, f"{node}:\n{outs[node]}"
        # each played instance took its own name from its launch index
        assert (
            f"launch: node {node} (ami-launch-index '{node[-1]}', address '127.0.0.1')"
            in (outs[node])
        )
        assert calls_log(tmp_path / f"n{node[-1]}").read_text().splitlines()[-1] == (
            "shutdown -h now"
        )

    detail = json.loads(launch_cli("status", "ring", "--json", cwd=project).stdout)
    (exp,) = detail["experiments"]
    assert exp["state"] == "succeeded", detail
    logs = {rank: launch_cli("logs", "ring/exp-0", "--rank", str(rank), cwd=project)
            for rank in (0, 1)}  # fmt: skip
    for rank, log in logs.items():
        assert log.returncode == 0, log.stderr
        assert f"rank {rank}: sum 3 over 2 processes" in log.stdout, log.stdout
    s3 = boto3.client("s3")
    attempt = 1
    cluster = json.loads(s3.get_object(
        Bucket=BUCKET, Key=f"launch/runs/ring/experiments/exp-0/gang/{attempt:06d}/cluster.json"
    )["Body"].read())  # fmt: skip
    assert cluster["addrs"] == ["127.0.0.1", "127.0.0.1"]  # aws.node_addr, not moto's IPs
    assert sorted(cluster["nodes"]) == ["node-0", "node-1"]
    states = aws_cli("ec2", "describe-instances", "--filters", "Name=tag:launch:run,Values=ring",
                     endpoint=aws)  # fmt: skip
    assert {i["State"]["Name"] for r in states["Reservations"] for i in r["Instances"]} <= {
        "shutting-down",
        "terminated",
    }
