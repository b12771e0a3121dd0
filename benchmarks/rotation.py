"""Rotation under steady load: failed requests and added latency around a key rotation,
for a static key, a TTL-only cache (Powertools style: the key from
``SecretsProvider.get(max_age=...)``, no retry) and ScalingAuth.

    uv run --all-packages --group bench python benchmarks/rotation.py [--quick]

A FakeScalingAPI (real HTTP on 127.0.0.1) serves ``GET /v1/oncall/schedules``; the key
lives in a moto Secrets Manager secret (127.0.0.1). The three clients run at the same
time, each with the same number of paced worker threads. Mid-run the key is rotated the
fast way: a new key is issued, stored in the secret, and the old key is revoked at once.
Target for ScalingAuth: 0 failed requests; a retried request pays one backend fetch plus
one more API round trip.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import httpx
from _common import (
    BackendCounter,
    machine_lines,
    moto_server,
    parser,
    percentile,
    put_secret,
    report,
    sm_client,
    table,
)

from scaling_credentials import KeyCache, ScalingAuth
from scaling_credentials.testing import FakeScalingAPI
from scaling_credentials_aws import SecretsManagerProvider

SECRET = "scaling/bench-rotation"


class TTLOnlyAuth(httpx.Auth):
    """The key from Powertools' cached ``get`` on every request; no retry on a 401."""

    def __init__(self, provider: Any, max_age: int) -> None:
        self._provider = provider
        self._max_age = max_age

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        key = self._provider.get(SECRET, max_age=self._max_age)
        request.headers["Authorization"] = f"Bearer {key}"
        yield request


@dataclass
class Record:
    started: float  # seconds since the run began
    latency: float
    status: int
    attempts: int


@dataclass
class Variant:
    name: str
    client: httpx.Client
    counter: BackendCounter | None
    records: list[Record] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


_responses = threading.local()  # responses seen by this worker thread


def responses_seen() -> int:
    return int(getattr(_responses, "count", 0))


def count_response(response: httpx.Response) -> None:
    # A sync client runs its hooks in the calling thread: a thread-local count tells
    # how many responses (the auth's 401 included) one request took.
    _responses.count = responses_seen() + 1


def counting_client(auth: httpx.Auth | None, **options: Any) -> httpx.Client:
    """A client whose response hook counts every response, retries included."""
    return httpx.Client(
        auth=auth, timeout=10.0, event_hooks={"response": [count_response]}, **options
    )


def worker(
    variant: Variant,
    url: str,
    begin: float,
    stop: threading.Event,
    interval: float,
) -> None:
    attempts_of = responses_seen
    next_at = time.perf_counter()
    while not stop.is_set():
        before = attempts_of()
        start = time.perf_counter()
        try:
            status = variant.client.get(url).status_code
        except httpx.HTTPError:
            status = 0
        end = time.perf_counter()
        record = Record(start - begin, end - start, status, attempts_of() - before)
        with variant.lock:
            variant.records.append(record)
        next_at += interval
        pause = next_at - time.perf_counter()
        if pause > 0:
            stop.wait(pause)  # paced load: same request rate for every variant
        else:
            next_at = time.perf_counter()


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=None, help="seconds of load")
    args = p.parse_args()
    duration = args.duration or (3.0 if args.quick else 6.0)
    rotate_at = duration / 3
    max_age = 2  # seconds; Powertools takes whole seconds
    workers_per_variant = 2
    interval = 0.02

    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    with moto_server() as endpoint, FakeScalingAPI() as api:
        admin = sm_client(endpoint)
        old = api.issue_key()
        put_secret(admin, SECRET, old)

        variants: list[Variant] = []
        client = counting_client(None, headers={"Authorization": f"Bearer {old}"})
        variants.append(Variant("static key", client, None))

        pt_counter = BackendCounter()
        pt = SecretsProvider(boto3_client=sm_client(endpoint, pt_counter))
        client = counting_client(TTLOnlyAuth(pt, max_age))
        variants.append(
            Variant(f"TTL-only cache (Powertools, max_age={max_age} s)", client, pt_counter)
        )

        ours_counter = BackendCounter()
        cache = KeyCache(SecretsManagerProvider(SECRET, client=sm_client(endpoint, ours_counter)))
        client = counting_client(ScalingAuth(cache))
        variants.append(Variant("ScalingAuth (ttl 300 s)", client, ours_counter))

        url = f"{api.url}/oncall/schedules"
        for variant in variants:  # warm: key fetched, connection open
            assert variant.client.get(url).status_code == 200
        for variant in variants:
            if variant.counter is not None:
                variant.counter.reset()

        stop = threading.Event()
        begin = time.perf_counter()
        threads = []
        for variant in variants:
            for _ in range(workers_per_variant):
                thread = threading.Thread(
                    target=worker, args=(variant, url, begin, stop, interval), daemon=True
                )
                threads.append(thread)
                thread.start()
        stop.wait(rotate_at)
        rotated_at = time.perf_counter() - begin
        new = api.rotate()
        put_secret(admin, SECRET, new)
        api.revoke(old)
        stop.wait(max(0.0, duration - rotated_at))
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        for variant in variants:
            variant.client.close()

    rows = []
    ours_failed = None
    detail_lines = []
    for variant in variants:
        records = variant.records
        before = [r.latency for r in records if r.started + r.latency < rotated_at]
        failed = [r for r in records if r.status != 200]
        retried = [r for r in records if r.attempts > 1]
        window = (
            f"{min(r.started for r in failed) - rotated_at:+.2f} .. "
            f"{max(r.started for r in failed) - rotated_at:+.2f} s"
            if failed
            else "-"
        )
        baseline = statistics.median(before) if before else float("nan")
        retried_lat = [r.latency for r in retried]
        backend = variant.counter.total() if variant.counter is not None else 0
        rows.append(
            (
                variant.name,
                len(records),
                f"**{len(failed)}**",
                window,
                len(retried),
                f"{baseline * 1000:.1f}",
                f"{statistics.median(retried_lat) * 1000:.1f} / {max(retried_lat) * 1000:.1f}"
                if retried_lat
                else "-",
                f"{percentile([r.latency for r in records], 0.99) * 1000:.1f}",
                backend,
            )
        )
        if variant.name.startswith("ScalingAuth"):
            ours_failed = len(failed)
            if retried_lat:
                retried_ms = statistics.median(retried_lat) * 1000
                detail_lines.append(
                    f"ScalingAuth's retried requests took {retried_ms:.1f}"
                    f" ms (median) against {baseline * 1000:.1f} ms for a plain request: one "
                    "401 round trip, one GetSecretValue (coalesced across the workers) and the "
                    "resent request."
                )

    verdict = "met" if ours_failed == 0 else "NOT met"
    lines = [
        "`benchmarks/rotation.py`: steady paced load (each client: "
        f"{workers_per_variant} threads, one request per {interval * 1000:.0f} ms each) on a "
        "FakeScalingAPI over real sockets, the key in a moto Secrets Manager secret, all "
        f"three clients at once for {duration:.0f} s. At {rotated_at:.1f} s the key is "
        "rotated the fast way: new key issued, stored in the secret, old key revoked at "
        f"once. Target for ScalingAuth: 0 failed requests ({verdict}).",
        "",
        *machine_lines(
            (
                "scaling-credentials",
                "scaling-credentials-aws",
                "httpx",
                "boto3",
                "moto",
                "aws-lambda-powertools",
            )
        ),
        "",
        *table(
            [
                "client",
                "requests",
                "failed",
                "failures (from rotation)",
                "retried",
                "p50 before rotation ms",
                "retried ms (median / max)",
                "p99 ms (all)",
                "backend calls during run",
            ],
            rows,
        ),
        "",
        *detail_lines,
        "",
        "Reading: a static key fails every request from the revocation on, until the "
        "process is restarted with the new key. A TTL-only cache fails every request until "
        f"its entry expires (here up to max_age = {max_age} s; with Powertools' default "
        "`max_age` of 300 s, up to 5 minutes), and it pays a backend call every `max_age` "
        "seconds all the time. ScalingAuth turns the first 401 `invalid_api_key` into one "
        "coalesced refetch and resends the request, so no request fails; its TTL can stay "
        "long. Absolute latencies are noisy on this shared machine.",
    ]
    report(args, "Rotation under load", lines)


if __name__ == "__main__":
    main()
