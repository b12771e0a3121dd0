"""scaling-credentials-aws: Scaling API keys from AWS Secrets Manager and Systems Manager
Parameter Store.

* :class:`SecretsManagerProvider` reads the key with boto3's ``GetSecretValue``
  (source URI ``aws-sm:SECRET_ID``).
* :class:`ParameterStoreProvider` reads it with boto3's ``GetParameter``, decrypted
  (source URI ``aws-ssm:NAME``).
* :class:`LambdaExtensionProvider` reads either through the AWS Parameters and Secrets
  Lambda Extension on localhost (source URIs ``aws-lambda-extension:SECRET_ID`` and
  ``aws-lambda-extension:ssm:NAME``), without importing boto3.

Importing this package imports neither boto3 nor botocore.
"""

from typing import TYPE_CHECKING

from ._lambda_extension import LambdaExtensionProvider

if TYPE_CHECKING:
    from ._parameterstore import ParameterStoreProvider
    from ._secretsmanager import SecretsManagerProvider

__all__ = ["LambdaExtensionProvider", "ParameterStoreProvider", "SecretsManagerProvider"]


def __getattr__(name: str) -> object:
    # The boto3 providers' modules load on first use: a Lambda function that reads through
    # the extension does not pay for them at cold start.
    if name == "ParameterStoreProvider":
        from ._parameterstore import ParameterStoreProvider

        return ParameterStoreProvider
    if name == "SecretsManagerProvider":
        from ._secretsmanager import SecretsManagerProvider

        return SecretsManagerProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
