"""scaling-credentials-vault: the Scaling API key from HashiCorp Vault or OpenBao.

::

    from scaling_credentials import ScalingAuth
    from scaling_credentials_vault import KubernetesAuth, VaultProvider

    provider = VaultProvider("scaling/api", auth=KubernetesAuth("scaling-app"))
    auth = ScalingAuth(provider)

or, from the environment:
``SCALING_API_KEY_SOURCE=vault:scaling/api?auth=kubernetes&role=scaling-app``.
"""

from ._auth import AppRoleAuth, JWTAuth, KubernetesAuth, TokenAuth, VaultAuth, VaultToken
from ._provider import VaultProvider

__all__ = [
    "AppRoleAuth",
    "JWTAuth",
    "KubernetesAuth",
    "TokenAuth",
    "VaultAuth",
    "VaultProvider",
    "VaultToken",
]
