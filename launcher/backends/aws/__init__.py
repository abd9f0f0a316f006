"""The AWS backend: one EC2 instance per node, the run's state and artifacts in S3.

``submit`` checks credentials and permissions first (STS, DryRun), then makes the security
group (no inbound rules) and the run's least-privilege instance profile, then launches up to
``max_nodes`` instances with zone fallback. Each instance's user-data installs the code
snapshot and runs ``python -m launcher.node.agent`` against ``s3://BUCKET/PREFIX``, then powers off
(and so terminates). ``nodes`` only reads (describe_instances by tag). ``reconcile`` compares
EC2 with S3: experiments left running on a vanished instance are re-queued, and, while
experiments are left and fewer than ``max_nodes`` instances live (a spot interruption, a crash),
replacements are launched within a budget of ``max_nodes + experiments x (retries + 1)``
instances per run, so a broken node image cannot spend without end. ``AwsBackend(replace=False)``
turns replacements off.

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
DescribeSecurityGroups, CreateSecurityGroup, RevokeSecurityGroupIngress, CreateTags,
TerminateInstances; iam:CreateRole, PutRolePolicy, CreateInstanceProfile,
AddRoleToInstanceProfile, GetInstanceProfile, PassRole and the matching Delete/Remove calls;
s3 on the bucket. They never leave the user's machine.

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
)
from launcher.errors import BackendError, CapacityError, LaunchError

if TYPE_CHECKING:
    from launcher.spec.jobspec import JobSpec
    from launcher.storage.root import Storage

log = logging.getLogger(__name__)


class AwsBackend(Backend):
    """EC2 nodes, S3 storage. Options override settings; ``clients`` injects boto3 clients."""

    name = "aws"
    capabilities = Capabilities(spot=True, multi_node=True, stop=True, gpus=True, cost=True)

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
        count = min(int(record["spec"]["max_nodes"]), len(record["experiments"]))
        return self._launch(run, record, [f"node-{i}" for i in range(count)], first=True)

    def _image(self) -> tuple[str, str]:
        ami = resolve_ami(self.settings, self.client("ssm"))
        images = self.client("ec2").describe_images(ImageIds=[ami])["Images"]
        if not images:
            raise BackendError(f"AMI {ami} does not exist in {self.settings.region}")
        return ami, images[0].get("RootDeviceName") or "/dev/sda1"

    def _launch(self, run: str, record: dict, names: list[str], *, first: bool) -> list[NodeInfo]:
        spec = record["spec"]
        ec2 = self.client("ec2")
        owner = prov.check_credentials(self.client("sts"))
        image_id, root_device = self._image()
        zones, skipped = prov.default_zones(ec2, spec["instance_type"])
        if skipped:
            log.info("%s is not offered in %s", spec["instance_type"], ", ".join(skipped))
        # The group is shared by the root's runs; the role is this run's.
        sg_tags = [
            {"Key": ec2req.TAG_OWNER, "Value": owner},
            {"Key": ec2req.TAG_ROOT, "Value": self.root_url},
        ]
        role_tags = [*sg_tags, {"Key": ec2req.TAG_RUN, "Value": run}]
        tries = int(spec.get("retries") or 0) + 1
        attempts = len(record["experiments"]) * tries

        def request(node: str, zone: prov.Zone, sg: str, profile: str, dry: bool) -> dict:
            values = UserDataValues(
                root_url=self.root_url,
                run=run,
                node=node,
                region=self.settings.region,
                max_runtime=spec.get("max_runtime"),
                attempts=attempts,
            )
            req = ec2req.NodeRequest(
                run=run,
                node=node,
                instance_type=spec["instance_type"],
                image_id=image_id,
                root_device_name=root_device,
                disk_size=int(spec["disk_size"]),
                spot=bool(spec.get("spot")),
                subnet_id=zone.subnet_id,
                security_group_id=sg,
                instance_profile_arn=profile,
                user_data=build_user_data(values),
                owner=owner,
                root_url=self.root_url,
            )
            params = ec2req.run_instances_request(req, dry_run=dry)
            if dry:  # nothing is created yet: check the launch itself, not our resources
                params.pop("SecurityGroupIds")
                params.pop("IamInstanceProfile")
            return params

        prov.dry_run(ec2, request(names[0], zones[0], "", "", True))
        sg = prov.ensure_security_group(ec2, zones[0].vpc_id, sg_tags, ec2req.SECURITY_GROUP_NAME)
        policy = iamlib.node_policy(
            self.settings.bucket,
            self.settings.prefix,
            run,
            spec.get("datastore"),
            spec.get("datastore_version"),
        )
        profile = iamlib.ensure_instance_profile(
            self.client("iam"), iamlib.profile_name(self.root_url, run), policy, role_tags
        )
        launched: list[NodeInfo] = []
        for node in names:
            if not self._reserve(run, node):
                continue  # another reconciler launches this one
            result = prov.launch_with_fallback(
                ec2,
                lambda z, node=node: request(node, z, sg, profile, False),
                zones,
                profile_wait_s=self.profile_wait_s,
            )
            if result.instance is None:
                why = prov.describe_failures(
                    spec["instance_type"], spec.get("spot"), result.failures
                )
                self.storage().write_json(
                    rec.node_key(run, node), {"node": node, "failed": why, "ended": time.time()}
                )
                if first and not launched:
                    raise CapacityError(why)
                self.launch_notes.append(f"{node} not launched: {why}")
                log.warning("%s not launched: %s", node, why)
                break  # the other zones answered the same a moment ago
            # Later nodes try the zone that just had room first.
            zones = [result.zone] + [z for z in zones if z != result.zone]
            self.storage().write_json(
                rec.node_key(run, node),
                {
                    "node": node,
                    "instance_id": result.instance["InstanceId"],
                    "instance_type": spec["instance_type"],
                    "zone": result.zone.name,
                    "spot": bool(spec.get("spot")),
                    "launched": time.time(),
                    "failed_zones": result.failures,
                },
            )
            launched.append(rec.node_info(result.instance))
        return launched

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
        want = missing_nodes(int(spec["max_nodes"]), statuses, live)
        tries = int(spec.get("retries") or 0) + 1
        budget = int(spec["max_nodes"]) + len(record["experiments"]) * tries - len(reserved)
        count = min(want, budget)
        if want > 0 and budget <= 0:
            done.notes.append(f"no replacement: the run's budget of {len(reserved)} nodes is spent")
        if count <= 0:
            return done
        start = max((rec.node_number(r["node"]) for r in reserved), default=-1) + 1
        names = [f"node-{start + i}" for i in range(count)]
        log.warning("%d node(s) missing and %d live: launching %s", want, live, names)
        try:
            done.started = self._launch(run, record, names, first=False)
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
