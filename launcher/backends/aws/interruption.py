"""Spot interruption notices, read from the instance metadata service (IMDSv2).

The agent polls ``pending()`` each heartbeat; when it turns True (EC2 gives two minutes' notice),
the agent stops the script, ships the last checkpoint and puts the experiment back in the queue
for another node. Standard library only: this runs on the node, every few seconds.

The endpoint follows botocore's own setting, ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` (default
``http://169.254.169.254``), which is also how tests point it at a fake metadata service.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from typing import Protocol

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL_S = 21600
NOTICE_PATH = "/latest/meta-data/spot/instance-action"


class Interruption(Protocol):
    """What the agent polls: True once the node is about to be taken away."""

    def pending(self) -> bool: ...


class NeverInterrupted:
    """For nodes that cannot be interrupted (on-demand, local)."""

    def pending(self) -> bool:
        return False


class ImdsInterruption:
    """The spot ``instance-action`` notice via IMDSv2 (a session token on every read).

    Once a notice is seen, ``pending()`` stays True (the notice is final); ``notice`` holds it.
    An unreachable metadata service reads as "no notice" (logged once): the node keeps working.
    """

    def __init__(self, endpoint: str | None = None, timeout: float = 2.0):
        self.endpoint = (
            endpoint or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or DEFAULT_ENDPOINT
        ).rstrip("/")
        self.timeout = timeout
        self.notice: dict | None = None
        self._token: str | None = None
        self._token_expires = 0.0
        self._warned = False

    def _fetch_token(self) -> str:
        req = urllib.request.Request(
            f"{self.endpoint}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)},
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            token = resp.read().decode()
        self._token = token
        # Renew well before expiry so a read never races the TTL.
        self._token_expires = time.monotonic() + TOKEN_TTL_S - 60
        return token

    def _read_notice(self, token: str) -> dict | None:
        req = urllib.request.Request(
            f"{self.endpoint}{NOTICE_PATH}", headers={"X-aws-ec2-metadata-token": token}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read().decode()
        except urllib.error.HTTPError as e:
            if e.code == 404:  # no interruption scheduled
                return None
            raise
        try:
            notice = json.loads(body)
        except ValueError:
            notice = {"action": body.strip()}
        return notice if isinstance(notice, dict) else {"action": str(notice)}

    def pending(self) -> bool:
        if self.notice is not None:
            return True
        try:
            token = self._token
            if token is None or time.monotonic() >= self._token_expires:
                token = self._fetch_token()
            try:
                notice = self._read_notice(token)
            except urllib.error.HTTPError as e:
                if e.code != 401:  # 401: the token expired or was revoked; get a new one
                    raise
                notice = self._read_notice(self._fetch_token())
        except (OSError, urllib.error.URLError) as e:
            if not self._warned:
                log.warning("instance metadata unreachable at %s: %s", self.endpoint, e)
                self._warned = True
            return False
        if notice is not None:
            log.warning("spot interruption notice: %s", notice)
            self.notice = notice
            return True
        return False
