"""S3 transfer throughput: `launch datastore create` and `launch artifacts pull` beside
`aws s3 cp --recursive`, on the same files and the same S3 endpoint.

By default it starts its own moto server (a separate process, so it does not share the
benchmark's interpreter) on 127.0.0.1 and points everything at it; ``--endpoint URL`` uses an
existing one (e.g. a MinIO). Both sides are timed end to end, as a user would see them, and both
do their own integrity work (the launcher hashes every file with sha256; the aws CLI checks MD5
or CRC). Prints MiB/s for each and the ratio launcher / aws CLI (> 1: the launcher is faster).

    python benchmarks/transfer.py                         # 48 files x 2 MiB, median of 3
    python benchmarks/transfer.py --files 200 --size-kib 256
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUCKET = "launch-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("moto server did not start")


def make_files(root: Path, count: int, size: int) -> int:
    """``count`` files of random bytes in a few folders, like a small datastore."""
    for i in range(count):
        folder = root / f"class_{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"clip_{i:04d}.mp4").write_bytes(os.urandom(size))
    return count * size


def aws_cp(src: str, dst: str) -> float:
    started = time.perf_counter()
    subprocess.run(["aws", "s3", "cp", "--recursive", "--only-show-errors", src, dst], check=True)
    return time.perf_counter() - started


def same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=48)
    p.add_argument("--size-kib", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=3, help="runs of each; the median is shown")
    p.add_argument("--endpoint", help="an existing S3 endpoint (default: start moto)")
    args = p.parse_args()

    server = None
    if args.endpoint:
        endpoint = args.endpoint
    else:
        server, endpoint = start_moto()
        os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    # Set before any client exists: every tool below (boto3, s3fs, aws CLI) goes there.
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint, AWS_DEFAULT_REGION="us-east-1", AWS_MAX_ATTEMPTS="3"
    )
    import boto3

    from launcher.storage.artifacts import pull_artifacts, ship_artifacts
    from launcher.storage.datastores import create_datastore
    from launcher.storage.root import Storage

    work = Path(tempfile.mkdtemp(prefix="launch-bench-"))
    try:
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        src = work / "src"
        total = make_files(src, args.files, args.size_kib * 1024)
        mib = total / 2**20
        storage = Storage(f"s3://{BUCKET}/launch", use_listings_cache=False)

        # Alternate the two tools and keep the median of each, to damp a noisy machine.
        times: dict[str, list[float]] = {"lu": [], "cu": [], "ld": [], "cd": []}
        for r in range(args.repeat):
            started = time.perf_counter()
            create_datastore(storage, f"bench-{r}", str(src))  # upload: datastore create
            times["lu"].append(time.perf_counter() - started)
            times["cu"].append(aws_cp(str(src), f"s3://{BUCKET}/awscli/up-{r}/"))

            # download: the same files shipped as a run's artifacts, pulled by each tool
            run = f"bench-{r}"
            storage.write_json(f"runs/{run}/run.json", {"name": run, "experiments": []})
            ship_artifacts(storage, run, "exp-0", src)
            started = time.perf_counter()
            pull_artifacts(storage, run, dest=work / "pulled")
            times["ld"].append(time.perf_counter() - started)
            key = f"s3://{BUCKET}/launch/runs/{run}/experiments/exp-0/artifacts/"
            times["cd"].append(aws_cp(key, str(work / f"awscli-down-{r}")))
            assert same_tree(src, work / "pulled" / run / "exp-0"), "pulled files differ"
            assert same_tree(src, work / f"awscli-down-{r}"), "aws CLI files differ"
        launch_up, cli_up, launch_down, cli_down = (
            statistics.median(times[k]) for k in ("lu", "cu", "ld", "cd")
        )

        print(
            f"{args.files} files x {args.size_kib} KiB = {mib:.1f} MiB, endpoint {endpoint}, "
            f"median of {args.repeat}"
        )
        print(f"{'':<10}{'launch':>22}{'aws s3 cp --recursive':>24}{'ratio':>8}")
        for what, ours, theirs, label in (
            ("upload", launch_up, cli_up, "datastore create"),
            ("download", launch_down, cli_down, "artifacts pull"),
        ):
            print(
                f"{what:<10}{label + f' {mib / ours:6.1f} MiB/s':>22}"
                f"{mib / theirs:>18.1f} MiB/s{theirs / ours:>8.2f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if server is not None:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
