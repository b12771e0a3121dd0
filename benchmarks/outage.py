"""Backend outage: calls served, calls failed and backend attempts per minute while
Secrets Manager is unreachable, for KeyCache vs. AWS Lambda Powertools (SecretsProvider)
vs. aws-secretsmanager-caching (SecretCache).

    uv run --all-packages --group bench python benchmarks/outage.py [--quick]

Method: the secret lives in a moto server on 127.0.0.1; every reader has its own boto3
client on it. During the outage a botocore ``before-send`` hook makes every request fail
with ``EndpointConnectionError`` before it leaves the process (what an unreachable
endpoint looks like to boto3). Time is simulated, for all three readers alike: KeyCache
takes a fake clock, and the two anchors, which read the wall clock through
``datetime.now()``, have that name in their module replaced by one that reads the same
fake clock (nothing else of theirs is touched). Each reader is asked for the key once
per simulated second. All clients make one HTTP attempt per call (botocore retries
off), so "attempts" are calls to the backend; with botocore retries on, multiply by the
attempt count. Targets for KeyCache: 0 failed calls within ``max_stale``, bounded
attempts, recovery within one backoff step.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from _common import (
    BackendCounter,
    machine_lines,
    moto_server,
    new_key,
    parser,
    put_secret,
    report,
    sm_client,
    table,
)

from scaling_credentials import KeyCache
from scaling_credentials_aws import SecretsManagerProvider

SECRET = "scaling/bench-outage"
TTL = 300
MAX_STALE = 900
BACKOFF_MAX = 60


class SimClock:
    """Simulated seconds, shared by every reader."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


CLOCK = SimClock()
_EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


class SimDatetime(datetime):
    """``datetime`` whose ``now()`` follows :data:`CLOCK` (for the anchors)."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> Any:
        moment = _EPOCH + timedelta(seconds=CLOCK())
        return moment if tz is not None else moment.replace(tzinfo=None)


def patch_anchor_clocks() -> None:
    import aws_lambda_powertools.utilities.parameters.base as powertools_base
    import aws_secretsmanager_caching.cache.items as secretcache_items

    powertools_base.datetime = SimDatetime  # type: ignore[misc]
    secretcache_items.datetime = SimDatetime  # type: ignore[misc]


# ---------------------------------------------------------------------- readers


class Reader:
    name = ""

    def read(self) -> str:
        raise NotImplementedError

    def settle(self) -> None:
        """Wait for a background fetch this call started (so the clock moves after it)."""


class Ours(Reader):
    name = f"KeyCache (ttl {TTL} s, max_stale {MAX_STALE} s, backoff 1..{BACKOFF_MAX} s)"

    def __init__(self, endpoint: str, counter: BackendCounter) -> None:
        self.cache = KeyCache(
            SecretsManagerProvider(SECRET, client=sm_client(endpoint, counter, max_attempts=1)),
            ttl=TTL,
            max_stale=MAX_STALE,
            backoff_max=BACKOFF_MAX,
            clock=CLOCK,
            rng=random.Random(7),
        )

    def read(self) -> str:
        return self.cache.get().reveal()

    def settle(self) -> None:
        flight = self.cache._flight  # a refresh-ahead fetch runs in the background
        if flight is not None:
            flight.done.wait(30)


class Powertools(Reader):
    name = f"Powertools get(max_age={TTL})"

    def __init__(self, endpoint: str, counter: BackendCounter) -> None:
        from aws_lambda_powertools.utilities.parameters import SecretsProvider

        self.provider = SecretsProvider(boto3_client=sm_client(endpoint, counter, max_attempts=1))

    def read(self) -> str:
        return str(self.provider.get(SECRET, max_age=TTL))


class SecretsCache(Reader):
    name = f"SecretCache (secret_refresh_interval {TTL} s)"

    def __init__(self, endpoint: str, counter: BackendCounter) -> None:
        from aws_secretsmanager_caching import SecretCache, SecretCacheConfig

        self.cache = SecretCache(
            config=SecretCacheConfig(secret_refresh_interval=TTL),
            client=sm_client(endpoint, counter, max_attempts=1),
        )

    def read(self) -> str:
        value = self.cache.get_secret_string(SECRET)
        if value is None:
            raise RuntimeError("no value")
        return str(value)


# ---------------------------------------------------------------------- simulation


@dataclass
class Minute:
    served: int = 0
    failed: int = 0
    attempts: int = 0


@dataclass
class Run:
    minutes: dict[int, Minute] = field(default_factory=dict)
    first_failure: float | None = None  # seconds after the outage began
    recovered_after: float | None = None  # first successful backend call after the end
    failed_after_end: int = 0
    served_stale_value: bool = False

    def during(self, start: float, end: float) -> list[Minute]:
        return [m for k, m in sorted(self.minutes.items()) if start <= k * 60 < end]


def simulate(
    make: Callable[[], Reader],
    counter: BackendCounter,
    outage_start: float,
    outage_end: float,
    end: float,
) -> Run:
    random.seed(7)  # SecretCache draws its refresh interval from the global generator
    CLOCK.now = 0.0
    reader = make()
    run = Run()
    value = reader.read()  # warm, before the outage
    t = 1.0
    while t < end:
        CLOCK.now = t
        counter.outage = outage_start <= t < outage_end
        before = counter.total()
        minute = run.minutes.setdefault(int(t // 60), Minute())
        try:
            got = reader.read()
        except Exception:
            minute.failed += 1
            if counter.outage and run.first_failure is None:
                run.first_failure = t - outage_start
            if t >= outage_end:
                run.failed_after_end += 1
        else:
            minute.served += 1
            run.served_stale_value |= counter.outage and got == value
        reader.settle()
        made = counter.total() - before
        minute.attempts += made
        if made and t >= outage_end and run.recovered_after is None:
            run.recovered_after = t - outage_end
        t += 1.0
    counter.outage = False
    return run


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    # KeyCache logs a warning per failed attempt (that is its job); here they are counted.
    logging.getLogger("scaling_credentials").setLevel(logging.ERROR)
    outages = [10, 30] if not args.quick else [10]
    outage_start = 120.0
    patch_anchor_clocks()

    rows = []
    minute_rows = []
    ours_ok = True
    with moto_server() as endpoint:
        put_secret(sm_client(endpoint), SECRET, new_key())
        for minutes in outages:
            outage_end = outage_start + minutes * 60
            end = outage_end + 600
            for cls in (Ours, Powertools, SecretsCache):
                counter = BackendCounter()
                run = simulate(
                    lambda cls=cls, counter=counter: cls(endpoint, counter),  # type: ignore[misc]
                    counter,
                    outage_start,
                    outage_end,
                    end,
                )
                during = run.during(outage_start, outage_end)
                served = sum(m.served for m in during)
                failed = sum(m.failed for m in during)
                attempts = [m.attempts for m in during]
                total_attempts = sum(attempts)
                rows.append(
                    (
                        f"{minutes} min",
                        cls.name,
                        served,
                        f"**{failed}**",
                        f"{run.first_failure:.0f} s" if run.first_failure is not None else "-",
                        total_attempts,
                        f"{total_attempts / minutes:.1f} / {max(attempts)}",
                        f"{run.recovered_after:.0f} s"
                        if run.recovered_after is not None
                        else "none in 10 min",
                        run.failed_after_end,
                    )
                )
                if minutes == max(outages):
                    minute_rows.append((cls.name, " ".join(str(a) for a in attempts)))
                if cls is Ours:
                    # Within max_stale past expiry nothing may fail; recovery within one
                    # backoff step (at most BACKOFF_MAX).
                    stale_until = TTL + MAX_STALE - outage_start  # from the outage start
                    first = run.first_failure
                    if first is not None and first < stale_until - TTL * 0.1 - 1:
                        ours_ok = False
                    if run.recovered_after is None or run.recovered_after > BACKOFF_MAX:
                        ours_ok = False
                    if run.failed_after_end > BACKOFF_MAX:
                        ours_ok = False

    lines = [
        "`benchmarks/outage.py`: Secrets Manager unreachable for 10 and 30 simulated "
        f"minutes, starting {outage_start:.0f} s after the key was fetched; each reader is "
        "asked for the key once per simulated second. Targets for KeyCache: 0 failed "
        "calls within `max_stale`, bounded attempts, recovery within one backoff step "
        f"({'met' if ours_ok else 'NOT met'}).",
        "",
        *machine_lines(
            (
                "scaling-credentials",
                "scaling-credentials-aws",
                "boto3",
                "moto",
                "aws-lambda-powertools",
                "aws-secretsmanager-caching",
            )
        ),
        "",
        *table(
            [
                "outage",
                "reader",
                "calls served",
                "calls failed",
                "first failure (after start)",
                "backend attempts",
                "attempts / min (mean / max)",
                "recovery (first backend call after the end)",
                "calls failed after the end",
            ],
            rows,
        ),
        "",
        f"Backend attempts per minute of the {max(outages)}-minute outage:",
        "",
        *table(["reader", "attempts in each minute"], minute_rows),
        "",
        "Method: the outage is a botocore `before-send` hook raising "
        "`EndpointConnectionError` for every request, so the readers' own error handling "
        "runs exactly as for an unreachable endpoint. Time is simulated for all three: "
        "KeyCache takes a fake clock; the anchors read `datetime.now()`, and that name in "
        "their modules is replaced by one reading the same fake clock (no other change). "
        "botocore retries are off for all three (one HTTP attempt per call).",
        "",
        "Reading:",
        f"- KeyCache serves the last key through the outage for up to `max_stale` "
        f"({MAX_STALE} s) past its expiry, with one backend attempt per backoff step "
        f"(1, 2, 4 ... capped at {BACKOFF_MAX} s, scaled by a random factor in [0.5, 1]): "
        "about one attempt a minute however many calls it serves. Past `max_stale` it "
        "raises the `ProviderError` (a key that old may have been revoked) and still tries "
        "the backend once per backoff step; the first attempt after the backend is back "
        "succeeds, so it recovers within one backoff step.",
        "- Powertools serves the value until `max_age` runs out, then every call tries the "
        "backend and fails: the attempt rate equals the call rate, and nothing is served "
        "until the backend is back (recovery is immediate then).",
        "- aws-secretsmanager-caching keeps serving the old value for as long as the "
        "outage lasts (no staleness limit: a revoked key would be served for hours), and "
        "retries with exponential backoff (1 s doubling, capped at 1 hour by default), so "
        "after a long outage it may take many minutes, up to an hour, to notice the "
        "backend is back.",
    ]
    report(args, "Backend outage", lines)


if __name__ == "__main__":
    main()
