"""Pickup latency: how long after a key file changes (a kubelet ``..data`` swap) a busy
reader is served the new key, with no 401 and no TTL wait.

    uv run --all-packages --group bench python benchmarks/pickup.py [--quick]

Each trial warms a ``KeyCache(FileProvider(...))`` with the library's defaults (ttl 300 s,
``check_interval`` 1 s) on a ``SecretVolume``; a reader thread calls ``cache.get()`` every
millisecond; at a random moment (uniform over one check interval, so every phase of the
check schedule is hit) the volume swaps in a new key; the latency is the time until the
reader is served it. Real clock, real file system, real threads.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
from pathlib import Path

from _common import machine_lines, parser, percentile, report, table

from scaling_credentials import FileProvider, KeyCache
from scaling_credentials.testing import SecretVolume

READ_EVERY = 0.001  # a busy service: a request every millisecond
OLD = "scl_live_" + "o" * 32
NEW = "scl_live_" + "n" * 32


def trial(rng: random.Random) -> float:
    directory = Path(tempfile.mkdtemp(prefix="scaling-pickup-"))
    try:
        volume = SecretVolume(directory)
        volume.write(OLD)
        cache = KeyCache(FileProvider(volume.path), ttl=300)
        cache.get()
        stop = threading.Event()
        seen: list[float] = []

        def reader() -> None:
            for _ in range(100_000):  # bounded: 100 s at most
                if stop.is_set():
                    return
                if cache.get().reveal() == NEW:
                    seen.append(time.perf_counter())
                    return
                time.sleep(READ_EVERY)  # the reader's own pace, not a wait for a result

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        time.sleep(rng.uniform(0.0, 1.0))  # a random phase of the check schedule
        written = time.perf_counter()
        volume.write(NEW)
        thread.join(timeout=30)
        stop.set()
        if not seen:
            raise SystemExit("the reader never saw the new key within 30 s")
        stats = cache.stats
        assert stats.forced_fetches == 0 and stats.fetches == 2, stats
        return seen[0] - written
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    trials = 10 if args.quick else 60
    rng = random.Random(11)
    latencies = sorted(trial(rng) for _ in range(trials))
    ms = [value * 1000 for value in latencies]
    lines = [
        "`benchmarks/pickup.py`: a key file laid out like a Kubernetes secret volume "
        "(`SecretVolume`), read by `KeyCache(FileProvider(...))` with the defaults "
        f"(ttl 300 s, check_interval 1 s) from a thread that reads every "
        f"{READ_EVERY * 1000:g} ms; the volume swaps in a new key at a random moment. "
        f"{trials} trials; latency from the swap to the first read served the new key. "
        "Every trial: 2 fetches (start, change), no forced fetch, no 401.",
        "",
        *machine_lines(("scaling-credentials",)),
        "",
        *table(
            ["pickup latency", "p50", "p99", "max"],
            [
                (
                    "kubelet swap -> new key served",
                    f"{percentile(ms, 0.5):.0f} ms",
                    f"{percentile(ms, 0.99):.0f} ms",
                    f"{ms[-1]:.0f} ms",
                )
            ],
        ),
        "",
        "The cache looks at the file's stamp (inode, size, modification time) at most once "
        "a second on the read path, so the pickup is spread over about one second, plus "
        "the refetch in the background. Without it a changed file would be picked up at "
        "the next TTL refresh (up to 300 s later) or after the old key's first 401.",
    ]
    report(args, "Pickup latency", lines)


if __name__ == "__main__":
    main()
