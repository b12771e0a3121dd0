"""The Kubernetes examples stay honest: every source they configure parses into the
provider the docs promise, every container has the `scaling-credentials check` readiness
probe, and no mount uses subPath (which would never see a rotated Secret)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scaling_credentials import FileProvider, Provider, provider_from_env
from scaling_credentials_vault import KubernetesAuth, VaultProvider

yaml = pytest.importorskip("yaml")

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "kubernetes"
PROBE = ["scaling-credentials", "check", "--quiet", "--timeout", "5"]


def deployments(name: str) -> list[dict[str, Any]]:
    documents = list(yaml.safe_load_all((EXAMPLES / name).read_text()))
    return [d for d in documents if d and d.get("kind") == "Deployment"]


def containers(name: str) -> list[dict[str, Any]]:
    return [c for d in deployments(name) for c in d["spec"]["template"]["spec"]["containers"]]


def provider_of(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Provider:
    env = {item["name"]: item["value"] for item in container.get("env", [])}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return provider_from_env(env)


MANIFESTS = sorted(p.name for p in EXAMPLES.glob("*.yaml"))


def test_all_four_patterns_are_there() -> None:
    assert MANIFESTS == [
        "01-secret-volume.yaml",
        "02-vault-agent-injector.yaml",
        "03-vault-kubernetes-auth.yaml",
        "04-eks-irsa-secrets-manager.yaml",
    ]


@pytest.mark.parametrize("name", MANIFESTS)
def test_readiness_probe_and_mounts(name: str) -> None:
    found = containers(name)
    assert found
    for container in found:
        assert container["readinessProbe"]["exec"]["command"] == PROBE
        assert container["readinessProbe"]["timeoutSeconds"] > 5
        for mount in container.get("volumeMounts", []):
            assert "subPath" not in mount, mount["name"]


def test_secret_volume_file_is_inside_the_mount(vault_env: pytest.MonkeyPatch) -> None:
    (container,) = containers("01-secret-volume.yaml")
    provider = provider_of(container, vault_env)
    assert isinstance(provider, FileProvider)
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert any(provider.path.startswith(m + "/") for m in mounts)


def test_agent_injector_template_matches_the_secret(vault_env: pytest.MonkeyPatch) -> None:
    (deployment,) = deployments("02-vault-agent-injector.yaml")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    path = annotations["vault.hashicorp.com/agent-inject-secret-scaling-api-key"]
    assert (
        f'secret "{path}"'
        in annotations["vault.hashicorp.com/agent-inject-template-scaling-api-key"]
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    provider = provider_of(container, vault_env)
    assert isinstance(provider, FileProvider)
    assert provider.path == "/vault/secrets/scaling-api-key"


def test_vault_kubernetes_auth_source(vault_env: pytest.MonkeyPatch) -> None:
    (container,) = containers("03-vault-kubernetes-auth.yaml")
    provider = provider_of(container, vault_env)
    assert isinstance(provider, VaultProvider)
    assert provider.url == "https://vault.vault.svc:8200"
    assert provider.verify == "/etc/vault-ca/ca.crt"
    assert isinstance(provider.auth, KubernetesAuth)
    assert provider.auth.role == "scaling-app"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert provider.auth.jwt_path == mounts["vault-token"] + "/token"


def test_eks_source(vault_env: pytest.MonkeyPatch) -> None:
    from scaling_credentials_aws import SecretsManagerProvider

    (container,) = containers("04-eks-irsa-secrets-manager.yaml")
    provider = provider_of(container, vault_env)
    assert isinstance(provider, SecretsManagerProvider)
    assert provider.describe() == "aws-sm:prod/scaling/api?field=api_key&region=eu-west-1"
