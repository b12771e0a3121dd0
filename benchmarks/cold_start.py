"""Cold start: what a Lambda function pays at init for each way of getting the key.

    uv run --group bench python benchmarks/cold_start.py [--quick] [--no-write]

Each variant is ``python -I -c CODE`` in a fresh interpreter, timed from the parent
(interpreter start included, as in a Lambda cold start). Every round runs each variant
once, in a shuffled order; ratios are taken per round against ``import httpx`` (which
scaling-credentials builds on), so load from other processes hits both sides alike.

The extension variant with a first fetch talks to a minimal stand-in for the AWS
Parameters and Secrets Lambda Extension that this script serves on 127.0.0.1. The boto3
variants only create the client (no request), so they measure import and set-up cost.
Nothing leaves loopback; credentials and region are fake.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from _common import Summary, machine_lines, parser, report, table

KEY = "scl_live_" + "Cs7" * 11
TOKEN = "cold-start-session-token"

BASELINE = "import httpx"
TARGET = 1.10  # core and extension path, median ratio to BASELINE
TARGETED = ("import scaling_credentials", "scaling_credentials_aws + LambdaExtensionProvider()")

VARIANTS: dict[str, str] = {
    "python -c pass": "pass",
    BASELINE: "import httpx",
    "import scaling_credentials": "import scaling_credentials",
    "scaling_credentials_aws + LambdaExtensionProvider()": (
        "import scaling_credentials_aws as a; a.LambdaExtensionProvider('prod/scaling')"
    ),
    "... + first fetch through the extension": (
        "import scaling_credentials_aws as a; a.LambdaExtensionProvider('prod/scaling').fetch()"
    ),
    "scaling_credentials_aws + boto3 client (SecretsManagerProvider)": (
        "import scaling_credentials_aws as a; "
        "a.SecretsManagerProvider('prod/scaling')._get_client()"
    ),
    "import aws_lambda_powertools.utilities.parameters": (
        "import aws_lambda_powertools.utilities.parameters"
    ),
    "... + powertools SecretsProvider() (boto3 client)": (
        "from aws_lambda_powertools.utilities import parameters; parameters.SecretsProvider()"
    ),
}

NEEDS = {
    "import aws_lambda_powertools.utilities.parameters": "aws_lambda_powertools",
    "... + powertools SecretsProvider() (boto3 client)": "aws_lambda_powertools",
}


class _Extension(BaseHTTPRequestHandler):
    """Answers like the extension: GetSecretValue JSON when the token header matches."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.headers.get("X-Aws-Parameters-Secrets-Token") != TOKEN:
            status, body = 400, b"missing or wrong token"
        else:
            status = 200
            body = json.dumps(
                {"Name": "prod/scaling", "VersionId": "v-1", "SecretString": KEY}
            ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def extension() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Extension)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def child_env(port: int) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "PYTHON")) and "PROXY" not in key.upper()
    }
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": TOKEN,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            # Safety net: any request a variant might send stays on loopback.
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(port),
            "POWERTOOLS_SERVICE_NAME": "cold-start-benchmark",
        }
    )
    return env


def run_once(code: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-I", "-c", code], env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{code!r} failed:\n{result.stderr[-1500:]}")
    return elapsed


def available(name: str) -> bool:
    module = NEEDS.get(name)
    if module is None:
        return True
    probe = subprocess.run(
        [sys.executable, "-I", "-c", f"import {module}"], capture_output=True, check=False
    )
    return probe.returncode == 0


def import_profile(code: str, env: dict[str, str], baseline: str) -> list[tuple[str, float]]:
    """What ``code`` imports beyond ``baseline``: self time (ms, ``-X importtime``, median
    of 5 runs) of the extra modules, summed by top-level package, largest first."""

    def self_times(snippet: str) -> dict[str, float]:
        result = subprocess.run(
            [sys.executable, "-I", "-X", "importtime", "-c", snippet],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        found: dict[str, float] = {}
        for line in result.stderr.splitlines():
            if line.startswith("import time:") and "|" in line:
                own, _, name = line[12:].split("|")
                if own.strip().isdigit():
                    found[name.strip()] = int(own) / 1000
        return found

    runs = [self_times(code) for _ in range(5)]
    base = set(self_times(baseline))
    by_package: dict[str, list[float]] = {}
    for run in runs:
        totals: dict[str, float] = {}
        for name, ms in run.items():
            if name not in base:
                top = name.split(".")[0]
                totals[top] = totals.get(top, 0.0) + ms
        for top, ms in totals.items():
            by_package.setdefault(top, []).append(ms)
    medians = {top: sorted(v)[len(v) // 2] for top, v in by_package.items()}
    return sorted(medians.items(), key=lambda item: -item[1])[:10]


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    rounds = 5 if args.quick else 60
    rng = random.Random(7)
    with extension() as port:
        env = child_env(port)
        names = [name for name in VARIANTS if available(name)]
        skipped = [name for name in VARIANTS if name not in names]
        times: dict[str, list[float]] = {name: [] for name in names}
        for name in names:  # warm-up: compile caches, page cache
            run_once(VARIANTS[name], env)
        for number in range(rounds):
            order = names[:]
            rng.shuffle(order)
            for name in order:
                times[name].append(run_once(VARIANTS[name], env))
            print(f"round {number + 1}/{rounds}", file=sys.stderr)
        extra = import_profile(VARIANTS["import scaling_credentials"], env, BASELINE)

    base = times[BASELINE]
    rows = []
    medians: dict[str, float] = {}
    for name in names:
        summary = Summary(times[name])
        ratio = Summary([a / b for a, b in zip(times[name], base, strict=True)])
        medians[name] = ratio.median
        rows.append(
            [f"`{name}`", summary.fmt(1000, 0), f"{ratio.median:.2f}x", ratio.fmt(digits=2)]
        )
    lines = [
        "What a fresh interpreter pays to get ready to fetch the key (Lambda init), by "
        f"variant: {rounds} interleaved rounds of `python -I -c ...` each, timed from the "
        "parent (interpreter start included). Ratios are per round against "
        "`import httpx`, which scaling-credentials builds on. Written by "
        "`benchmarks/cold_start.py`.",
        "",
        *table(
            [
                "variant",
                "wall ms (min / median / max)",
                "median ratio to `import httpx`",
                "ratio min / median / max",
            ],
            rows,
        ),
        "",
        f"- Target: the core and the extension path within {TARGET:.2f}x of `import httpx` "
        f"(median ratio): {'met' if all(medians[n] <= TARGET for n in TARGETED) else 'NOT met'}"
        f" in this run ({', '.join(f'{medians[n]:.3f}x' for n in TARGETED)}).",
        "- The extension path never imports boto3; its first fetch adds httpcore (httpx "
        "imports it lazily, at the first client) and one loopback request to a stand-in "
        "extension served by the benchmark.",
        "- The boto3 rows create a `secretsmanager` client and send nothing.",
        "- `import scaling_credentials` over `import httpx` adds (self time by package, "
        "`-X importtime`, median of 5 runs): "
        + (", ".join(f"{name} {ms:.1f} ms" for name, ms in extra) or "nothing measurable")
        + ".",
    ]
    if skipped:
        lines.append(
            f"- Not measured (not installed; `uv sync --all-packages --group bench`): "
            f"{', '.join(skipped)}."
        )
    lines += ["", *machine_lines()]
    report(args, "Cold start", lines)


if __name__ == "__main__":
    main()
