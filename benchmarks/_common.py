"""Shared helpers for the benchmarks: machine facts, statistics, interleaved timing, the
results writer for docs/performance.md, and a moto server with counting boto3 clients.

Every benchmark compares variants measured side by side in one run, in interleaved
rounds, and reports ratios: the machine is shared (2 cores, other jobs running), so
absolute numbers are noisy while ratios of interleaved rounds are not, much.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PERFORMANCE_MD = ROOT / "docs" / "performance.md"

REGION = "us-east-1"

PACKAGES = (
    "scaling-credentials",
    "scaling-credentials-aws",
    "httpx",
    "cachetools",
    "boto3",
    "botocore",
    "moto",
    "aws-lambda-powertools",
    "aws-secretsmanager-caching",
    "pyinstrument",
    "matplotlib",
)

_PREAMBLE = """# Performance

Side-by-side measurements of scaling-credentials against what users would otherwise pick
(a static header, a minimal `httpx.Auth`, AWS Lambda Powertools `parameters`,
aws-secretsmanager-caching, a bare `cachetools.TTLCache`). Each section is written by
the benchmark named in it; see [benchmarks/README.md](../benchmarks/README.md) to rerun.

**Read the ratios, not the absolute numbers.** The benchmarks run on a small shared
machine (2 cores, other jobs running at the same time): every variant is measured in
interleaved rounds within one run, so load hits all sides alike and the ratios hold,
while absolute microseconds move by 10-30 % from run to run.

Fleet-scale planning (backend requests per second for 1 to 100,000 processes) is in
[scale.md](scale.md).
"""


# ---------------------------------------------------------------------- arguments


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    p.add_argument(
        "--no-write",
        action="store_true",
        help="print the results only; do not update docs/performance.md",
    )
    return p


# ---------------------------------------------------------------------- machine facts


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or "unknown"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_lines(packages: Sequence[str] = PACKAGES) -> list[str]:
    """Markdown lines describing where and with what a benchmark ran."""
    versions = ", ".join(f"{name} {package_version(name)}" for name in packages)
    command = " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    return [
        f"- Machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}, "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        f"- Packages: {versions}",
        f"- Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, `{command}`",
    ]


# ---------------------------------------------------------------------- statistics


@dataclass
class Summary:
    """min / median / max of a list of numbers."""

    values: list[float]

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def fmt(self, scale: float = 1.0, digits: int = 2) -> str:
        """``min / median / max`` scaled and rounded."""
        return " / ".join(f"{v * scale:.{digits}f}" for v in (self.min, self.median, self.max))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


# ---------------------------------------------------------------------- interleaved timing


@dataclass
class Interleaved:
    """Per-operation times (seconds) of several variants measured in interleaved rounds:
    in each round every variant runs ``n`` operations, in a shuffled order, so a burst of
    load from another process hits every variant about equally."""

    names: list[str]
    times: dict[str, list[float]] = field(default_factory=dict)

    def ratio(self, name: str, baseline: str) -> Summary:
        """Per-round ratio ``name / baseline``: each round's pair ran back to back."""
        return Summary([a / b for a, b in zip(self.times[name], self.times[baseline], strict=True)])

    def summary(self, name: str) -> Summary:
        return Summary(self.times[name])


def interleave(
    variants: dict[str, Callable[[int], float]],
    *,
    rounds: int,
    n: int,
    warmup: int = 1,
    seed: int = 1,
) -> Interleaved:
    """Run each ``variants[name](n)`` (which returns the elapsed seconds for ``n``
    operations) ``rounds`` times, shuffled within each round."""
    rng = random.Random(seed)
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name](n)
    result = Interleaved(names, {name: [] for name in names})
    for _ in range(rounds):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            result.times[name].append(variants[name](n) / n)
    return result


def loop_timer(call: Callable[[str], object], arg: str) -> Callable[[int], float]:
    """``run(n)``: the seconds that ``n`` calls of ``call(arg)``, back to back, take (a
    variant for :func:`interleave`)."""

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            call(arg)
        return time.perf_counter() - start

    return run


def best_per_call(
    runs: dict[str, Callable[[], float]], number: int, repeats: int = 15
) -> dict[str, float]:
    """The best seconds per call of each ``runs[name]()`` (which times ``number`` calls),
    over ``repeats`` rounds that run every variant in turn."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            best[name] = min(best[name], run() / number)
    return best


# ---------------------------------------------------------------------- docs/performance.md


def write_section(heading: str, lines: Sequence[str], path: Path = PERFORMANCE_MD) -> None:
    """Replace (or append) the ``## heading`` section of ``path``, leaving every other
    section as it is (another benchmark may own it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8") if path.exists() else _PREAMBLE
    if not text.strip():
        text = _PREAMBLE
    body = "\n".join(lines).rstrip() + "\n"
    block = f"## {heading}\n\n{body}"
    pattern = re.compile(
        rf"^## {re.escape(heading)}[ \t]*\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL
    )
    if pattern.search(text):
        text = pattern.sub(lambda _m: block + "\n", text, count=1)
    else:
        text = text.rstrip() + "\n\n" + block
    text = text.rstrip() + "\n"
    # Written whole and renamed, so a reader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".performance", suffix=".md")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def report(args: argparse.Namespace, heading: str, lines: Sequence[str]) -> None:
    """Print the section and, unless ``--no-write``, write it to docs/performance.md."""
    print(f"## {heading}\n")
    print("\n".join(lines))
    if not args.no_write:
        write_section(heading, lines)
        print(f"\n(written to {PERFORMANCE_MD.relative_to(ROOT)})")


# ---------------------------------------------------------------------- AWS on moto

_AWS_VARIABLES_TO_CLEAR = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
)


def fake_aws_environment() -> None:
    """Fake credentials and region only: the credential chain never leaves loopback."""
    for name in _AWS_VARIABLES_TO_CLEAR:
        os.environ.pop(name, None)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1 at a free port, in this process; yields its URL."""
    fake_aws_environment()
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


class BackendCounter:
    """Counts the HTTP requests boto3 clients send to Secrets Manager, per operation
    (botocore's ``before-send`` event: one per attempt, retries included). While
    ``outage`` is set, every request fails with a connection error before it is sent,
    as when the endpoint is unreachable."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.outage = False
        self._lock = threading.Lock()

    def total(self) -> int:
        with self._lock:
            return sum(self.calls.values())

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()

    def __call__(self, request: Any, **kwargs: Any) -> None:
        # The event name is "before-send.secrets-manager.<Operation>".
        operation = str(kwargs.get("event_name", "?")).rsplit(".", 1)[-1]
        with self._lock:
            self.calls[operation] += 1
        if self.outage:
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url=request.url)


def sm_client(
    endpoint: str, counter: BackendCounter | None = None, *, max_attempts: int | None = None
) -> Any:
    """A ``secretsmanager`` client on the moto server, counted by ``counter``."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts} if max_attempts else None
    )
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    client = session.client("secretsmanager", endpoint_url=endpoint, config=config)
    if counter is not None:
        client.meta.events.register("before-send.secrets-manager.*", counter)
    return client


def put_secret(client: Any, name: str, value: str) -> str:
    """Create ``name`` or add a version (moving AWSCURRENT); return the VersionId."""
    from botocore.exceptions import ClientError

    try:
        return str(client.put_secret_value(SecretId=name, SecretString=value)["VersionId"])
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        return str(client.create_secret(Name=name, SecretString=value)["VersionId"])


def new_key() -> str:
    """A fresh, valid-looking Scaling API key."""
    import secrets

    return "scl_live_" + secrets.token_urlsafe(24)
