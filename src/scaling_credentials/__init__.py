"""scaling-credentials: fetch, cache and rotate Scaling API keys for httpx.

Quick start::

    import httpx
    from scaling_credentials import ScalingAuth

    with httpx.Client(base_url="https://api.scaling.cloud/v1", auth=ScalingAuth()) as client:
        client.get("/oncall/schedules")
"""

from ._api import async_scaling_client, raise_for_scaling_error, scaling_client
from ._auth import ScalingAuth
from ._cache import CacheStats, KeyCache
from ._chain import ChainProvider
from ._env import EnvProvider
from ._errors import (
    ConfigurationError,
    InvalidKeyFormatError,
    ProviderError,
    ProviderTimeoutError,
    ScalingAPIError,
    ScalingCredentialsError,
    SecretNotFoundError,
)
from ._events import CacheEvent
from ._file import FileProvider
from ._key import ApiKey
from ._provider import Provider
from ._redact import redact_logging
from ._registry import SourceURI, provider_from_env, provider_from_uri
from ._version import __version__

__all__ = [
    "ApiKey",
    "CacheEvent",
    "CacheStats",
    "ChainProvider",
    "ConfigurationError",
    "EnvProvider",
    "FileProvider",
    "InvalidKeyFormatError",
    "KeyCache",
    "Provider",
    "ProviderError",
    "ProviderTimeoutError",
    "ScalingAPIError",
    "ScalingAuth",
    "ScalingCredentialsError",
    "SecretNotFoundError",
    "SourceURI",
    "__version__",
    "async_scaling_client",
    "provider_from_env",
    "provider_from_uri",
    "raise_for_scaling_error",
    "redact_logging",
    "scaling_client",
]
