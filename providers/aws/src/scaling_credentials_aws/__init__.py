"""scaling-credentials-aws: Scaling API keys from AWS Secrets Manager.

* :class:`SecretsManagerProvider` reads the key with boto3's ``GetSecretValue``
  (source URI ``aws-sm:SECRET_ID``).
* :class:`LambdaExtensionProvider` reads it through the AWS Parameters and Secrets Lambda
  Extension on localhost (source URI ``aws-lambda-extension:SECRET_ID``), without
  importing boto3.

Importing this package imports neither boto3 nor botocore.
"""

from ._lambda_extension import LambdaExtensionProvider
from ._secretsmanager import SecretsManagerProvider

__all__ = ["LambdaExtensionProvider", "SecretsManagerProvider"]
