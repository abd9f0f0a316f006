"""The heartbeat of one claim, from its own thread, for the claim's whole life.

It beats from the moment an experiment is claimed until its finish is written: through setup,
restore, the run and the last ship, however long a transfer takes and whatever the main thread
is doing, so a healthy attempt is never judged dead by its age. Each beat also looks for fencing:
a later claim or a final record written by someone else (see claims.claim_lost) sets ``lost``,
and the main thread stops the script and writes nothing more.
"""

from __future__ import annotations

import sys
import threading

from launcher.node import claims as cl
from launcher.storage.root import Storage


class Heartbeat:
    def __init__(self, storage: Storage, claim: cl.Claim, interval: float):
        self.storage, self.claim, self.interval = storage, claim, interval
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{claim.exp}",
                                        daemon=True)  # fmt: skip

    def __enter__(self) -> Heartbeat:
        self.beat()  # at once: the claim's first sign of life
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        """One beat; never raises (a storage hiccup is retried at the next beat, and if storage
        stays away past the stale timeout another node takes over and fences this one)."""
        try:
            if cl.claim_lost(self.storage, self.claim):
                self.lost.set()
                return
            cl.beat(self.storage, self.claim)
        except Exception as e:  # noqa: BLE001 - the thread must outlive any error
            print(f"[agent] heartbeat failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
