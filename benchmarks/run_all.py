"""Run every benchmark that writes docs/performance.md (and docs/scale.md), one after
the other, each in its own interpreter.

    uv run --all-packages --group bench python benchmarks/run_all.py [--quick] [--no-write]

``--only hot_path,stampede`` runs a subset. The soak test (benchmarks/soak.py) is not
part of this run: it is long by design.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHMARKS = (
    "hot_path",
    "integrations",
    "pickup",
    "cached_read",
    "stampede",
    "rotation",
    "outage",
    "cold_start",
    "fleet",
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--only", default="", help="comma-separated benchmark names")
    args = p.parse_args()
    chosen = [name for name in args.only.split(",") if name] or list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    flags = [flag for flag, on in (("--quick", args.quick), ("--no-write", args.no_write)) if on]
    failed = []
    for name in chosen:
        script = HERE / f"{name}.py"
        if not script.exists():
            print(f"== {name}: {script.name} is missing, skipped")
            continue
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, str(script), *flags], cwd=HERE)
        print(f"== {name}: exit {code} after {time.perf_counter() - started:.0f} s\n", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
