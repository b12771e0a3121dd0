"""Hot path: requests through ScalingAuth with a warm cache vs. a static Authorization
header vs. a minimal httpx.Auth, over httpx.MockTransport, sync and async.

    uv run --all-packages --group bench python benchmarks/hot_path.py [--quick] [--profile]

Each round runs ``n`` requests per variant, in a shuffled order; the ratio of each round
is taken between requests that ran back to back, so the load of other processes on the
machine hits both sides alike. Target: ScalingAuth / static header <= 1.02 (median).

``--profile`` also runs the ScalingAuth variant under pyinstrument and prints the tree.
The "prototype" variant is a subclass of ScalingAuth with the hot-path changes proposed
in docs/performance.md, measured in the same rounds (it is not the library's code).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import timeit
from collections.abc import AsyncGenerator, Callable, Generator

import httpx
from _common import (
    Interleaved,
    Summary,
    interleave,
    loop_timer,
    machine_lines,
    parser,
    report,
    table,
)

from scaling_credentials import ApiKey, FileProvider, KeyCache, ScalingAuth
from scaling_credentials._authcore import check_target
from scaling_credentials.testing import MemoryProvider

URL = "https://api.scaling.cloud/v1/oncall/schedules"
KEY = "scl_live_" + "Xq3" * 11
BODY = b'{"data":[]}'


def handler(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=BODY)


class MinimalAuth(httpx.Auth):
    """What a user writes by hand: the header from a fixed string, no refresh, no retry."""

    def __init__(self, header: str) -> None:
        self._header = header

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class PrototypeAuth(ScalingAuth):
    """ScalingAuth with the hot path inlined (a measurement aid, not library code): the
    destination check (the path's substring test, the memo lookup), the cache's
    fresh-snapshot test and the header set are done
    in the flow itself instead of through ``_check``, ``KeyCache.get``/``aget`` and
    ``_apply``. The async flow thus creates and awaits no coroutine while the key is
    fresh. Same behaviour; the 401 path is delegated to ScalingAuth's flow."""

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        ref = request.url._uri_reference
        check_target(ref.path, ref.query or "")
        if (ref.scheme, ref.host, ref.port, ref.userinfo) not in self._core.checked:
            self._check(request)
        cache = self._cache
        hot = cache._state.entry
        if hot is not None and cache._clock() < hot.until:
            cache._hits += 1
            key = hot.key
        else:
            key = cache.get()
        core = self._core
        header = core._header
        if header is None or header[0] is not key:
            header = core._header = (key, "Bearer " + key.reveal())
        request.headers["Authorization"] = header[1]
        response = yield request
        if response.status_code == 401:
            yield from self._after_401(request, response, key)

    def _after_401(
        self, request: httpx.Request, response: httpx.Response, key: ApiKey
    ) -> Generator[httpx.Request, httpx.Response, None]:
        flow = super().sync_auth_flow(request)  # the rare path: ScalingAuth's own
        next(flow)
        try:
            retry = flow.send(response)
        except StopIteration:
            return
        yield retry

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        ref = request.url._uri_reference
        check_target(ref.path, ref.query or "")
        if (ref.scheme, ref.host, ref.port, ref.userinfo) not in self._core.checked:
            self._check(request)
        cache = self._cache
        hot = cache._state.entry
        if hot is not None and cache._clock() < hot.until:
            cache._hits += 1
            key = hot.key
        else:
            key = await cache.aget()
        core = self._core
        header = core._header
        if header is None or header[0] is not key:
            header = core._header = (key, "Bearer " + key.reveal())
        request.headers["Authorization"] = header[1]
        response = yield request
        if response.status_code != 401:
            return
        flow = super().async_auth_flow(request)  # the rare path: ScalingAuth's own
        await flow.__anext__()
        try:
            retry = await flow.asend(response)
        except StopAsyncIteration:
            return
        yield retry


def warm_auth(cls: type[ScalingAuth]) -> ScalingAuth:
    auth = cls(KeyCache(MemoryProvider(KEY), ttl=3600))
    auth.cache.get()
    return auth


_KEY_DIR = tempfile.mkdtemp(prefix="scaling-hot-path-")


def warm_file_auth() -> ScalingAuth:
    """ScalingAuth on a FileProvider: the read path also checks the file's stamp (at most
    once a second), so that a changed file is picked up without a 401."""
    path = os.path.join(_KEY_DIR, "api-key")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(KEY)
    os.chmod(path, 0o600)
    auth = ScalingAuth(KeyCache(FileProvider(path), ttl=3600))
    auth.cache.get()
    return auth


def sync_variants() -> tuple[dict[str, Callable[[int], float]], list[httpx.Client]]:
    transport = httpx.MockTransport(handler)
    clients = {
        "static header": httpx.Client(
            transport=transport, headers={"Authorization": f"Bearer {KEY}"}
        ),
        "minimal httpx.Auth": httpx.Client(transport=transport, auth=MinimalAuth(f"Bearer {KEY}")),
        "ScalingAuth": httpx.Client(transport=transport, auth=warm_auth(ScalingAuth)),
        "ScalingAuth, file source": httpx.Client(transport=transport, auth=warm_file_auth()),
        "prototype": httpx.Client(transport=transport, auth=warm_auth(PrototypeAuth)),
    }

    for client in clients.values():
        assert client.get(URL).status_code == 200
    return {name: loop_timer(c.get, URL) for name, c in clients.items()}, list(clients.values())


def async_variants(
    loop: asyncio.AbstractEventLoop,
) -> tuple[dict[str, Callable[[int], float]], list[httpx.AsyncClient]]:
    transport = httpx.MockTransport(handler)
    clients = {
        "static header": httpx.AsyncClient(
            transport=transport, headers={"Authorization": f"Bearer {KEY}"}
        ),
        "minimal httpx.Auth": httpx.AsyncClient(
            transport=transport, auth=MinimalAuth(f"Bearer {KEY}")
        ),
        "ScalingAuth": httpx.AsyncClient(transport=transport, auth=warm_auth(ScalingAuth)),
        "ScalingAuth, file source": httpx.AsyncClient(transport=transport, auth=warm_file_auth()),
        "prototype": httpx.AsyncClient(transport=transport, auth=warm_auth(PrototypeAuth)),
    }

    def runner(client: httpx.AsyncClient) -> Callable[[int], float]:
        async def batch(n: int) -> float:
            get = client.get
            start = time.perf_counter()
            for _ in range(n):
                await get(URL)
            return time.perf_counter() - start

        def run(n: int) -> float:
            return loop.run_until_complete(batch(n))

        return run

    return {name: runner(c) for name, c in clients.items()}, list(clients.values())


def components(number: int) -> list[tuple[str, float]]:
    """Per-call cost (ns) of the steps ScalingAuth adds, each timed alone."""
    auth = warm_auth(ScalingAuth)
    cache = auth.cache
    request = httpx.Request("GET", URL)
    key = cache.get()
    header = f"Bearer {KEY}"

    def snapshot() -> ApiKey | None:
        hot = cache._state.entry
        return hot.key if hot is not None and cache._clock() < hot.until else None

    steps: list[tuple[str, Callable[[], object]]] = [
        ("empty call (timing floor)", lambda: None),
        ("destination check (`ScalingAuth._check`, memo hit)", lambda: auth._check(request)),
        ("`KeyCache.get()` (warm)", cache.get),
        ("fresh-snapshot test inlined (prototype)", snapshot),
        ("`ScalingAuth._apply` (header set)", lambda: auth._apply(request, key)),
        (
            "`request.headers['Authorization'] = ...` (the floor)",
            lambda: request.headers.__setitem__("Authorization", header),
        ),
    ]
    results: list[tuple[str, float]] = []
    for name, fn in steps:
        best = min(timeit.repeat(fn, number=number, repeat=5)) / number
        results.append((name, best * 1e9))

    loop = asyncio.new_event_loop()

    async def aget_many(n: int) -> float:
        aget = cache.aget
        start = time.perf_counter()
        for _ in range(n):
            await aget()
        return time.perf_counter() - start

    async def snapshot_many(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            snapshot()
        return time.perf_counter() - start

    best_aget = min(loop.run_until_complete(aget_many(number)) for _ in range(5)) / number
    best_snap = min(loop.run_until_complete(snapshot_many(number)) for _ in range(5)) / number
    loop.close()
    results.append(("`await KeyCache.aget()` (warm)", best_aget * 1e9))
    results.append(("fresh-snapshot test in a coroutine, no await (prototype)", best_snap * 1e9))
    return results


def profile(n: int) -> str:
    from pyinstrument import Profiler

    (variants, clients) = sync_variants()
    profiler = Profiler(interval=0.0001)
    profiler.start()
    variants["ScalingAuth"](n)
    profiler.stop()
    for client in clients:
        client.close()
    return profiler.output_text(unicode=True, color=False, show_all=False)


def flow_costs(number: int) -> dict[str, tuple[float, float]]:
    """Cost (ns) of one pass through each variant's auth flow, sync and async, driven by
    hand as httpx does (``next(flow)`` / ``flow.send(response)`` until it stops) with a
    prebuilt request and a 200 response: the auth's whole per-request cost without
    httpx's. Best of 15 interleaved repeats."""
    response = httpx.Response(200, content=BODY)
    auths: dict[str, httpx.Auth] = {
        "static header (httpx's no-auth flow)": httpx.Auth(),
        "minimal httpx.Auth": MinimalAuth(f"Bearer {KEY}"),
        "ScalingAuth": warm_auth(ScalingAuth),
        "prototype (inlined)": warm_auth(PrototypeAuth),
    }
    loop = asyncio.new_event_loop()

    def sync_run(auth: httpx.Auth) -> Callable[[], float]:
        request = httpx.Request("GET", URL)
        flow_of = auth.sync_auth_flow

        def run() -> float:
            start = time.perf_counter()
            for _ in range(number):
                flow = flow_of(request)
                next(flow)
                try:
                    flow.send(response)
                except StopIteration:
                    pass
            return time.perf_counter() - start

        return run

    def async_run(auth: httpx.Auth) -> Callable[[], float]:
        request = httpx.Request("GET", URL)
        flow_of = auth.async_auth_flow

        async def many() -> float:
            start = time.perf_counter()
            for _ in range(number):
                flow = flow_of(request)
                await flow.__anext__()
                try:
                    await flow.asend(response)
                except StopAsyncIteration:
                    pass
            return time.perf_counter() - start

        return lambda: loop.run_until_complete(many())

    runs = {name: (sync_run(auth), async_run(auth)) for name, auth in auths.items()}
    best = {name: [float("inf"), float("inf")] for name in runs}
    for _ in range(15):
        for name, (sync_fn, async_fn) in runs.items():
            best[name][0] = min(best[name][0], sync_fn() / number)
            best[name][1] = min(best[name][1], async_fn() / number)
    loop.close()
    return {name: (s * 1e9, a * 1e9) for name, (s, a) in best.items()}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--profile", action="store_true", help="print a pyinstrument profile")
    args = p.parse_args()
    # Many short rounds: a round of 50 requests (~4 ms) is seldom hit by the scheduler
    # on a shared machine, so the median of the per-round ratios holds within about half
    # a percent from run to run (rounds of 250 moved it a percent either way).
    rounds, n = (8, 150) if args.quick else (600, 50)

    sync, sync_clients = sync_variants()
    sync_result = interleave(sync, rounds=rounds, n=n)
    for client in sync_clients:
        client.close()

    loop = asyncio.new_event_loop()
    asyncs, async_clients = async_variants(loop)
    async_result = interleave(asyncs, rounds=rounds, n=n)
    for aclient in async_clients:
        loop.run_until_complete(aclient.aclose())
    loop.close()

    parts = components(10_000 if args.quick else 30_000)
    flows = flow_costs(5_000 if args.quick else 20_000)

    lines = [
        "`benchmarks/hot_path.py`: requests through `ScalingAuth` with a warm cache vs. a "
        "static `Authorization` header (client default headers) vs. a minimal `httpx.Auth` "
        "(sets the header from a fixed string), over `httpx.MockTransport` (no network), "
        f"sync and async. {rounds} interleaved rounds of {n} requests per variant; ratios "
        "are per round, between variants that ran back to back. Target: ScalingAuth / "
        "static header <= 1.02.",
        "",
        *machine_lines(("scaling-credentials", "httpx", "cachetools", "pyinstrument")),
        "",
    ]
    for mode, result in (
        ("sync (`httpx.Client`)", sync_result),
        ("async (`httpx.AsyncClient`)", async_result),
    ):
        lines += [f"**{mode}**", ""]
        lines += _rows(result)
        lines.append("")
    lines += [
        verdict(sync_result, async_result),
        "",
        "Where the time goes. pyinstrument (`--profile` prints the tree) puts 95+ % of a "
        "request in httpx (building the request, merging headers, `Response.__init__`, the "
        "transport) and about 3 % in `ScalingAuth.sync_auth_flow`, some 40 % of that in "
        "`Headers.__setitem__`. Driven by hand (no httpx around it, best of 15, ns per "
        "request), each auth flow costs:",
        "",
        *table(
            ["auth flow", "sync ns", "sync vs ScalingAuth", "async ns", "async vs ScalingAuth"],
            [
                (
                    name,
                    f"{sync_ns:.0f}",
                    f"{sync_ns - flows['ScalingAuth'][0]:+.0f}",
                    f"{async_ns:.0f}",
                    f"{async_ns - flows['ScalingAuth'][1]:+.0f}",
                )
                for name, (sync_ns, async_ns) in flows.items()
            ],
        ),
        "",
        "and its steps, each timed alone (best of 5, ns per call):",
        "",
        *table(["step", "ns per call"], [(name, f"{ns:.0f}") for name, ns in parts]),
        "",
        *reading(flows, parts, sync_result),
    ]
    report(args, "Hot path", lines)
    if args.profile:
        print(profile(5000))


def reading(
    flows: dict[str, tuple[float, float]], parts: list[tuple[str, float]], sync: Interleaved
) -> list[str]:
    ours, proto = flows["ScalingAuth"], flows["prototype (inlined)"]
    static, minimal = flows["static header (httpx's no-auth flow)"], flows["minimal httpx.Auth"]
    step = dict(parts)
    request_ns = sync.summary("static header").median * 1e9
    aget_ns = step["`await KeyCache.aget()` (warm)"]
    snap_ns = step["fresh-snapshot test in a coroutine, no await (prototype)"]
    return [
        "Reading:",
        f"- Over a static header, ScalingAuth's flow costs {ours[0] - static[0]:.0f} ns more "
        f"per request sync and {ours[1] - static[1]:.0f} ns async, against "
        f"{request_ns / 1000:.0f} us for the whole request here: the header set "
        "(`Headers.__setitem__`: encode, lower-case, scan the header list), the floor that "
        "every auth setting a header pays (the minimal `httpx.Auth` pays "
        f"{minimal[0] - static[0]:.0f} ns of it); the destination check, a memo lookup "
        "that keeps the key from being sent to a foreign host, and a substring test of the "
        "path and query for a pasted key (the contract asks for both); "
        "and the cache read, one clock read and one comparison against an immutable "
        "snapshot with no lock. ScalingAuth runs one generator per request where an "
        "`auth_flow` override runs two, which pays back part of that.",
        "- Nothing is paid that a careful design would avoid: no per-request parsing "
        "(`Bearer <key>` is built once per key), no lock on the hot path (the cache's lock "
        "is taken only on a miss), no allocation beyond the memo's destination "
        "tuple and httpx's own objects.",
        "- What is left to gain is small. Inlining the three steps into the flows (the "
        "prototype, a subclass measured in the same rounds) saves "
        f"{ours[0] - proto[0]:.0f} ns sync and {ours[1] - proto[1]:.0f} ns async per "
        "request; in the async flow most of that comes from not creating and awaiting a "
        f"coroutine while the key is fresh (`await aget()` {aget_ns:.0f} ns against "
        f"{snap_ns:.0f} ns). "
        f"That is about {100 * (ours[1] - proto[1]) / request_ns:.2f} % of a request.",
    ]


def _rows(result: Interleaved) -> list[str]:
    rows = []
    static_best = result.summary("static header").min
    for name in result.names:
        per_request: Summary = result.summary(name)
        rows.append(
            (
                name,
                per_request.fmt(1e6, 1),
                result.ratio(name, "static header").fmt(1, 3),
                f"{per_request.min / static_best:.3f}",
                result.ratio(name, "minimal httpx.Auth").fmt(1, 3),
            )
        )
    return table(
        [
            "variant",
            "us per request (min / median / max)",
            "per-round ratio vs static header (min / median / max)",
            "best-round ratio vs static",
            "per-round ratio vs minimal Auth",
        ],
        rows,
    )


def verdict(sync: Interleaved, asyncs: Interleaved) -> str:
    parts = []
    ok = True
    for mode, result in (("sync", sync), ("async", asyncs)):
        for variant in ("ScalingAuth", "ScalingAuth, file source"):
            median = result.ratio(variant, "static header").median
            best = result.summary(variant).min / result.summary("static header").min
            ok = ok and median <= 1.02
            parts.append(f"{variant} {mode} {median:.3f} (best rounds {best:.3f})")
    return (
        "Result: against a static header, median of the per-round ratios: "
        + ", ".join(parts)
        + f"; target <= 1.02 {'met' if ok else 'NOT met in this run'}. The file source "
        "also looks at the file's stamp once a second on the read path (a `stat`), so that "
        "a changed key is picked up before any 401."
    )


if __name__ == "__main__":
    main()
