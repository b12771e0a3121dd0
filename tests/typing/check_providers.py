"""Type-checked by mypy --strict, never run: the provider distributions as users write them."""

from __future__ import annotations

from scaling_credentials import ChainProvider, KeyCache, Provider, ScalingAuth
from scaling_credentials_aws import LambdaExtensionProvider, SecretsManagerProvider
from scaling_credentials_vault import AppRoleAuth, KubernetesAuth, VaultProvider


def aws() -> ScalingAuth:
    primary: Provider = LambdaExtensionProvider("prod/scaling", field="api_key")
    fallback: Provider = SecretsManagerProvider(
        "prod/scaling", field="api_key", region_name="eu-west-1"
    )
    return ScalingAuth(KeyCache(ChainProvider(primary, fallback), ttl=600.0))


def vault() -> ScalingAuth:
    kubernetes = VaultProvider("scaling/api", auth=KubernetesAuth("scaling-app"))
    approle = VaultProvider("scaling/api", mount_point="kv", auth=AppRoleAuth("role", "secret"))
    return ScalingAuth(ChainProvider(kubernetes, approle), ttl=120.0)
