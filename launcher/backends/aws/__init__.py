"""The AWS backend: one EC2 instance per node, the run's state and artifacts in S3.

``submit`` checks credentials and permissions first (STS, DryRun), then makes the security
group (its one inbound rule: traffic from the group itself), the run's cluster placement group
if ``placement: cluster``, and the run's least-privilege instance profile, then launches
:func:`~launcher.backends.base.wanted_nodes` instances with zone fallback: one ``run_instances``
per gang of ``nodes`` (``MinCount=MaxCount=nodes``: all or none), so ``--nodes 2 --max-nodes 4``
with two experiments is two requests of two. Each instance's user-data installs the code
snapshot and runs ``python -m launcher.node.agent`` against ``s3://BUCKET/PREFIX``, then powers off
(and so terminates); the agents form each experiment's gang through storage. ``nodes`` only
reads (describe_instances by tag). ``reconcile`` compares EC2 with S3: experiments left running
on a vanished instance are re-queued, and, while experiments are left and fewer nodes live than
wanted (a spot interruption, a crash), replacements are launched within a budget of
``max_nodes + experiments x (retries + 1) x nodes`` nodes per run, so a broken node image cannot
spend without end. A gang that lost one node gets one replacement: gangs are formed through
storage, not by reservation, so the survivors wait in its lobby and the newcomer fills the slot.
``AwsBackend(replace=False)`` turns replacements off.

Concurrent reconcilers (several ``launch status`` on several laptops) agree through S3: a node
is launched only by whoever creates its record ``runs/RUN/nodes/node-K.json`` exclusively (a
conditional put), the next number is one past the highest record, and a record that is being
launched, or whose instance EC2 does not list yet, counts as live for ``LAUNCH_GRACE_S``. So each
missing node is launched once, whoever runs reconcile.

Setup: an S3 bucket (``launch config set aws.bucket BUCKET``; prefix ``aws.prefix``, default
``launch``), credentials and region from the standard AWS chain, a default VPC. The AMI is the
region's Deep Learning Base GPU AMI from its public SSM parameter, or ``aws.ami``. The user's
credentials need: sts:GetCallerIdentity; ssm:GetParameter; ec2:RunInstances, DescribeInstances,
DescribeImages, DescribeVpcs, DescribeSubnets, DescribeInstanceTypeOfferings,
DescribeSecurityGroups, CreateSecurityGroup, AuthorizeSecurityGroupIngress,
RevokeSecurityGroupIngress, CreateTags, TerminateInstances, and for ``--placement cluster``
CreatePlacementGroup, DescribePlacementGroups, DeletePlacementGroup; iam:CreateRole,
PutRolePolicy, CreateInstanceProfile, AddRoleToInstanceProfile, GetInstanceProfile, PassRole
and the matching Delete/Remove calls; s3 on the bucket. They never leave the user's machine.

boto3 is imported only when a client is first needed: ``launch --help`` never loads it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from launcher.backends.aws import ec2 as ec2req
from launcher.backends.aws import iam as iamlib
from launcher.backends.aws import provision as prov
from launcher.backends.aws import reconcile as rec
from launcher.backends.aws.config import AwsSettings, resolve_ami, resolve_settings
from launcher.backends.aws.userdata import UserDataValues, build_user_data
from launcher.backends.base import (
    Backend,
    Capabilities,
    NodeInfo,
    Reconciled,
    missing_nodes,
    requeue_orphans,
    wanted_nodes,
)
from launcher.errors import BackendError, CapacityError, LaunchError

if TYPE_CHECKING:
    from launcher.spec.jobspec import JobSpec
    from launcher.storage.root import Storage

log = logging.getLogger(__name__)


def gang_size(spec: Mapping[str, Any]) -> int:
    """Nodes per experiment (``nodes`` in run.json; runs written before it have 1)."""
    return max(1, int(spec.get("nodes") or 1))


def requests_of(names: list[str], size: int) -> list[list[str]]:
    """Node names cut into ``run_instances`` requests of one gang each: whole gangs first, a
    remainder (the missing ranks of a gang that lost some) as one smaller request."""
    return [names[i : i + size] for i in range(0, len(names), size)]


def node_budget(spec: Mapping[str, Any], experiments: int) -> int:
    """The most nodes a run may ever launch: ``max_nodes`` to start with, then for every
    attempt of every experiment, each of its ``nodes`` may be lost and replaced once
    (``max_nodes + experiments x (retries + 1) x nodes``). A broken image spends it and stops."""
    tries = int(spec.get("retries") or 0) + 1
    return int(spec["max_nodes"]) + experiments * tries * gang_size(spec)


class AwsBackend(Backend):
    """EC2 nodes, S3 storage. Options override settings; ``clients`` injects boto3 clients."""

    name = "aws"
    capabilities = Capabilities(
        spot=True, multi_node=True, stop=True, gpus=True, cost=True, gangs=True, placement=True
    )

    def __init__(
        self,
        *,
        bucket: str | None = None,
        prefix: str | None = None,
        region: str | None = None,
        ami: str | None = None,
        clients: dict[str, Any] | None = None,
        replace: bool = True,
        profile_wait_s: float = 60.0,
    ):
        self.settings: AwsSettings = resolve_settings(bucket, prefix, region, ami)
        self.replace = replace
        self.profile_wait_s = profile_wait_s
        self.launch_notes: list[str] = []  # what submit/replacements could not do, for the CLI
        self._clients = dict(clients or {})
        self._session = None
        self._storage: Storage | None = None

    # -- plumbing ---------------------------------------------------------------------------
    def client(self, service: str) -> Any:
        if service not in self._clients:
            if self._session is None:
                import boto3

                self._session = boto3.session.Session(region_name=self.settings.region)
            self._clients[service] = self._session.client(service)
        return self._clients[service]

    def storage(self) -> Storage:
        if self._storage is None:
            from launcher.storage.root import Storage

            self._storage = Storage(
                self.settings.root_url,
                use_listings_cache=False,
                client_kwargs={"region_name": self.settings.region},
            )
        return self._storage

    @property
    def root_url(self) -> str:
        return self.settings.root_url

    @classmethod
    def configured(cls) -> bool:
        """A bucket is set (``LAUNCH_AWS_BUCKET`` or ``aws.bucket``): its runs are listed too."""
        try:
            resolve_settings()
        except LaunchError:
            return False
        return True

    # -- submit -----------------------------------------------------------------------------
    def submit(self, run: str, spec: JobSpec) -> list[NodeInfo]:
        record = self.storage().read_json(f"runs/{run}/run.json")
        s = record["spec"]
        size = gang_size(s)
        count = wanted_nodes(int(s["max_nodes"]), len(record["experiments"]), size)
        names = [f"node-{i}" for i in range(count)]
        return self._launch(run, record, requests_of(names, size), first=True)

    def _image(self) -> tuple[str, str]:
        ami = resolve_ami(self.settings, self.client("ssm"))
        images = self.client("ec2").describe_images(ImageIds=[ami])["Images"]
        if not images:
            raise BackendError(f"AMI {ami} does not exist in {self.settings.region}")
        return ami, images[0].get("RootDeviceName") or "/dev/sda1"

    def _launch(
        self, run: str, record: dict, requests: list[list[str]], *, first: bool
    ) -> list[NodeInfo]:
        """Launch ``requests``: each a list of consecutive node names sent as one
        ``run_instances`` (``MinCount=MaxCount=len``), after reserving their records."""
        spec = record["spec"]
        ec2 = self.client("ec2")
        owner = prov.check_credentials(self.client("sts"))
        image_id, root_device = self._image()
        zones, skipped = prov.default_zones(ec2, spec["instance_type"])
        if skipped:
            log.info("%s is not offered in %s", spec["instance_type"], ", ".join(skipped))
        # The group is shared by the root's runs; the role and the placement group are this run's.
        sg_tags = [
            {"Key": ec2req.TAG_OWNER, "Value": owner},
            {"Key": ec2req.TAG_ROOT, "Value": self.root_url},
        ]
        run_tags = [*sg_tags, {"Key": ec2req.TAG_RUN, "Value": run}]
        tries = int(spec.get("retries") or 0) + 1
        attempts = len(record["experiments"]) * tries
        placement = spec.get("placement") == "cluster"

        def request(nodes: list[str], zone: prov.Zone, sg: str, profile: str, dry: bool) -> dict:
            values = UserDataValues(
                root_url=self.root_url,
                run=run,
                node=nodes[0],
                count=len(nodes),
                region=self.settings.region,
                max_runtime=spec.get("max_runtime"),
                attempts=attempts,
                node_addr=self.settings.node_addr,
            )
            req = ec2req.NodeRequest(
                run=run,
                node=nodes[0],
                count=len(nodes),
                instance_type=spec["instance_type"],
                image_id=image_id,
                root_device_name=root_device,
                disk_size=int(spec["disk_size"]),
                spot=bool(spec.get("spot")),
                subnet_id=zone.subnet_id,
                security_group_id=sg,
                instance_profile_arn=profile,
                placement_group=ec2req.placement_group_name(self.root_url, run)
                if placement
                else None,
                user_data=build_user_data(values),
                owner=owner,
                root_url=self.root_url,
            )
            params = ec2req.run_instances_request(req, dry_run=dry)
            if dry:  # nothing is created yet: check the launch itself, not our resources
                params.pop("SecurityGroupIds")
                params.pop("IamInstanceProfile")
                params.pop("Placement", None)
            return params

        prov.dry_run(ec2, request(requests[0], zones[0], "", "", True))
        sg = prov.ensure_security_group(ec2, zones[0].vpc_id, sg_tags, ec2req.SECURITY_GROUP_NAME)
        if placement:
            prov.ensure_placement_group(
                ec2, ec2req.placement_group_name(self.root_url, run), run_tags
            )
        policy = iamlib.node_policy(
            self.settings.bucket,
            self.settings.prefix,
            run,
            spec.get("datastore"),
            spec.get("datastore_version"),
        )
        profile = iamlib.ensure_instance_profile(
            self.client("iam"), iamlib.profile_name(self.root_url, run), policy, run_tags
        )
        launched: list[NodeInfo] = []
        for names in requests:
            mine = self._reserve_all(run, names)
            if not mine:
                continue  # another reconciler launches these
            result = prov.launch_with_fallback(
                ec2,
                lambda z, mine=mine: request(mine, z, sg, profile, False),
                zones,
                profile_wait_s=self.profile_wait_s,
            )
            if not result.instances:
                why = prov.describe_failures(
                    spec["instance_type"], spec.get("spot"), result.failures
                )
                if len(mine) > 1:
                    why += f" (a gang of {len(mine)}: all or none)"
                for node in mine:
                    self.storage().write_json(
                        rec.node_key(run, node), {"node": node, "failed": why, "ended": time.time()}
                    )
                if first and not launched:
                    raise CapacityError(why)
                self.launch_notes.append(f"{', '.join(mine)} not launched: {why}")
                log.warning("%s not launched: %s", ", ".join(mine), why)
                break  # the other zones answered the same a moment ago
            # Later requests try the zone that just had room first.
            zones = [result.zone] + [z for z in zones if z != result.zone]
            launched.extend(self._record(run, spec, mine, result))
        return launched

    def _record(
        self, run: str, spec: dict, names: list[str], result: prov.LaunchResult
    ) -> list[NodeInfo]:
        """Write each launched node's record; name a gang's instances by their launch index."""
        out = []
        for inst in sorted(result.instances, key=lambda i: int(i.get("AmiLaunchIndex") or 0)):
            index = int(inst.get("AmiLaunchIndex") or 0)
            node = names[index]
            if len(names) > 1:
                self._tag_instance(inst["InstanceId"], ec2req.instance_tags(run, node, index))
            self.storage().write_json(
                rec.node_key(run, node),
                {
                    "node": node,
                    "instance_id": inst["InstanceId"],
                    "instance_type": spec["instance_type"],
                    "zone": result.zone.name,
                    "spot": bool(spec.get("spot")),
                    "launched": time.time(),
                    "failed_zones": result.failures,
                    "launch_index": index,  # informational: its rank is the gang slot it takes
                    "gang": names if len(names) > 1 else None,
                    "private_ip": inst.get("PrivateIpAddress"),
                },
            )
            info = rec.node_info(inst)
            info.node_id = node
            out.append(info)
        return out

    def _tag_instance(self, instance_id: str, tags: list[dict[str, str]]) -> None:
        """A gang member's own name; best effort: until it is there, its launch index names it."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client("ec2").create_tags(Resources=[instance_id], Tags=tags)
        except (ClientError, BotoCoreError) as e:
            log.warning("cannot tag %s with its node name: %s", instance_id, e)

    def _reserve_all(self, run: str, names: list[str]) -> list[str]:
        """Reserve a request's nodes in order, up to the first one someone else holds: a
        concurrent reconciler reserves the same names in the same order, so it takes the rest."""
        mine = []
        for node in names:
            if not self._reserve(run, node):
                break
            mine.append(node)
        return mine

    def _reserve(self, run: str, node: str) -> bool:
        """Take the right to launch ``node`` (its record, created exclusively); False if taken."""
        body = {"node": node, "reserved": time.time(), "host": socket.gethostname(),
                "pid": os.getpid()}  # fmt: skip
        return self.storage().create_exclusive(rec.node_key(run, node), json.dumps(body).encode())

    # -- inspect (read-only) ----------------------------------------------------------------
    def nodes(self, run: str) -> list[NodeInfo]:
        instances = rec.find_instances(self.client("ec2"), self.root_url, run)
        infos = [rec.node_info(i) for i in instances]
        return sorted(infos, key=lambda n: (len(n.node_id), n.node_id))

    # -- reconcile --------------------------------------------------------------------------
    def reconcile(self, run: str, statuses: Mapping[str, dict]) -> Reconciled:
        storage = self.storage()
        notes_before = len(self.launch_notes)
        reserved = rec.node_records(storage, run)  # before EC2: a node reserved after is unseen
        infos = self.nodes(run)  # by both, so its reserver and we pick the same name for it
        gone = {n.node_id: rec.why_gone(n) for n in infos if not n.live}
        requeued = requeue_orphans(storage, run, statuses, gone)
        done = Reconciled(requeued=requeued)
        for exp in requeued:
            log.warning("re-queued %s: its node went away before it finished", exp)
        if not self.replace or storage.exists(f"runs/{run}/stop"):
            return done
        record = storage.read_json(f"runs/{run}/run.json")
        spec = record["spec"]
        statuses = {**statuses, **{e: {"state": "queued"} for e in requeued}}
        live = rec.live_count(infos, reserved)
        size = gang_size(spec)
        want = missing_nodes(int(spec["max_nodes"]), statuses, live, size)
        budget = node_budget(spec, len(record["experiments"])) - len(reserved)
        count = min(want, budget)
        if want > 0 and budget <= 0:
            done.notes.append(f"no replacement: the run's budget of {len(reserved)} nodes is spent")
        if count <= 0:
            return done
        start = max((ec2req.node_number(r["node"]) for r in reserved), default=-1) + 1
        names = [f"node-{start + i}" for i in range(count)]
        log.warning("%d node(s) missing and %d live: launching %s", want, live, names)
        try:
            done.started = self._launch(run, record, requests_of(names, size), first=False)
        except BackendError as e:  # status still reports; the next status tries again
            done.notes.append(f"replacement not launched: {e}")
            log.warning("replacement not launched: %s", e)
        done.notes.extend(self.launch_notes[notes_before:])  # this call's, not earlier ones
        return done

    # -- stop and delete --------------------------------------------------------------------
    def stop(self, run: str) -> list[NodeInfo]:
        ec2 = self.client("ec2")
        live = [
            i
            for i in rec.find_instances(ec2, self.root_url, run)
            if i["State"]["Name"] not in ("terminated", "shutting-down")
        ]
        if live:
            ec2.terminate_instances(InstanceIds=[i["InstanceId"] for i in live])
        stopped = [rec.node_info(i) for i in live]
        for n in stopped:
            n.state = "terminated"
        return stopped

    def delete(self, run: str) -> None:
        self.stop(run)
        iamlib.delete_instance_profile(self.client("iam"), iamlib.profile_name(self.root_url, run))
        record = self.storage().read_json(f"runs/{run}/run.json", default=None)
        if isinstance(record, dict) and record.get("spec", {}).get("placement"):
            prov.delete_placement_group(
                self.client("ec2"), ec2req.placement_group_name(self.root_url, run)
            )
