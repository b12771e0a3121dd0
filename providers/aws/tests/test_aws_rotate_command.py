"""``scaling-credentials rotate`` against AWS on a moto server: Secrets Manager gets a new
AWSCURRENT version keeping the secret's other JSON fields (the old one at AWSPREVIOUS),
Parameter Store a new parameter version of the same type; both read back through a new
provider, with no request lost by a fleet reading the same secret under load; neither key
in any output."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from scaling_credentials import ApiKey, ScalingAuth
from scaling_credentials.testing import FakeScalingAPI
from scaling_credentials.testing.provider_suite import assert_key_is, assert_no_secret
from scaling_credentials.toolkit import mask
from scaling_credentials_aws import SecretsManagerProvider

from .conftest import put_secret

RunRotate = Callable[..., Any]  # the run_rotate fixture (conftest.py at the root)


@pytest.fixture(autouse=True)
def aws_on_moto(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets Manager and Parameter Store on the moto server, for the command too."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_endpoint)


def no_secret(ran: Any, *keys: str) -> None:
    for key in keys:
        assert_no_secret(key.removeprefix("scl_live_"), ran.stdout, ran.stderr)


def value_at(sm: Any, name: str, stage: str) -> dict[str, Any]:
    answer = sm.get_secret_value(SecretId=name, VersionStage=stage)
    return {"version": answer["VersionId"], **json.loads(answer["SecretString"])}


def test_rotate_puts_a_new_awscurrent_version_keeping_the_other_fields(
    sm: Any, secret_name: str, api: FakeScalingAPI, run_rotate: RunRotate
) -> None:
    old, new = api.issue_key(), api.rotate()
    first = put_secret(sm, secret_name, SecretString=json.dumps({"api_key": old, "note": "ops"}))

    ran = run_rotate(
        "--source", f"aws-sm:{secret_name}?field=api_key", "--base-url", api.url, "--json",
        stdin=new,
    )  # fmt: skip

    assert ran.returncode == 0, ran.stderr
    current = value_at(sm, secret_name, "AWSCURRENT")
    previous = value_at(sm, secret_name, "AWSPREVIOUS")
    assert_key_is(ApiKey(current.pop("api_key")), new)
    assert_key_is(ApiKey(previous.pop("api_key")), old)
    assert current.pop("note") == previous.pop("note") == "ops"
    assert previous == {"version": first}
    document = json.loads(ran.stdout)
    assert (document["old_version"], document["new_version"]) == (first, current["version"])
    assert document["read_back"] == {"key": mask(new), "version": current["version"], "reads": 1}
    no_secret(ran, old, new)


@pytest.mark.slow
def test_no_request_fails_when_rotate_runs_under_load_and_the_old_key_is_revoked(
    sm: Any,
    secret_name: str,
    moto_endpoint: str,
    api: FakeScalingAPI,
    rotate_under_load: Callable[..., Any],
) -> None:
    first = api.issue_key()
    put_secret(sm, secret_name, SecretString=first)
    auth = ScalingAuth(SecretsManagerProvider(secret_name, endpoint_url=moto_endpoint))

    run, outputs = rotate_under_load(api, auth, f"aws-sm:{secret_name}", first)

    assert run.failed == 0, f"{run.failed} of {len(run.statuses)} requests failed"
    assert len(outputs) == 3
    for ran in outputs:
        no_secret(ran, first, api.current_key or "")


def test_rotate_puts_a_new_parameter_version_of_the_same_type(
    request: pytest.FixtureRequest, api: FakeScalingAPI, run_rotate: RunRotate
) -> None:
    ssm = request.getfixturevalue("ssm")  # conftest's, where Parameter Store is tested
    name = request.getfixturevalue("parameter_name")
    old, new = api.issue_key(), api.rotate()
    ssm.put_parameter(Name=name, Value=old, Type="SecureString")

    ran = run_rotate("--source", f"aws-ssm:{name}", "--base-url", api.url, "--json", stdin=new)

    assert ran.returncode == 0, ran.stderr
    parameter = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]
    assert_key_is(ApiKey(parameter["Value"]), new)
    assert (parameter["Type"], parameter["Version"]) == ("SecureString", 2)
    document = json.loads(ran.stdout)
    assert (document["old_version"], document["new_version"]) == ("1", "2")
    assert document["read_back"] == {"key": mask(new), "version": "2", "reads": 1}
    no_secret(ran, old, new)
