"""Run the Lambda handler on this machine, no cloud account needed.

It starts a local Secrets Manager (moto, on 127.0.0.1) and the project's FakeScalingAPI,
stores a key in a secret, points the handler at them through the same environment
variables a real function uses, and invokes it: once, then again after the key was rotated
(AWSCURRENT moved to a new version) and the old key revoked.

    uv run python examples/lambda/run_locally.py

(moto is a development dependency of this repository: `uv sync --all-packages`.)
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

from scaling_credentials.testing import FakeScalingAPI

SECRET = "prod/scaling-api-key"


def fake_aws_environment(endpoint: str) -> None:
    """Fake credentials, and every AWS call on the local moto server."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "HTTP_PROXY", "HTTPS_PROXY"):
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ENDPOINT_URL_SECRETS_MANAGER=endpoint,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )


def load_handler() -> object:
    """Import handler.py the way Lambda does: a fresh module, built once."""
    path = Path(__file__).with_name("handler.py")
    spec = importlib.util.spec_from_file_location("lambda_handler", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    # Lambda's runtime installs a log handler; locally, basicConfig stands in for it.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's access log
    logging.getLogger("botocore").setLevel(logging.WARNING)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        fake_aws_environment(f"http://{host}:{port}")
        secrets = boto3.client("secretsmanager")
        with FakeScalingAPI() as api:
            old_key = api.issue_key()
            secrets.create_secret(Name=SECRET, SecretString=old_key)
            os.environ["SCALING_API_KEY_SOURCE"] = f"aws-sm:{SECRET}"
            os.environ["SCALING_API_BASE_URL"] = api.url

            lambda_module = load_handler()
            handler = lambda_module.handler  # type: ignore[attr-defined]
            print("invocation 1:", handler({}, None))
            print("invocation 2 (cached key):", handler({}, None))

            new_key = api.rotate()
            secrets.put_secret_value(SecretId=SECRET, SecretString=new_key)  # AWSCURRENT
            api.revoke(old_key)
            print("rotated and revoked the old key")
            print("invocation 3:", handler({}, None))

            cache = lambda_module.CACHE  # type: ignore[attr-defined]
            failed = [r for r in api.requests if r.status != 200]
            print(
                f"requests: {len(api.requests)}, answered 401 then retried: {len(failed)}, "
                f"Secrets Manager reads: {cache.stats.fetches}"
            )
            lambda_module.CLIENT.close()  # type: ignore[attr-defined]
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
