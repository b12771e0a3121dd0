"""Integrations with other libraries, each an optional extra that ``import
scaling_credentials`` never imports:

* :mod:`scaling_credentials.integrations.requests`: ``ScalingRequestsAuth``, for
  ``requests`` (extra ``[requests]``);
* :mod:`scaling_credentials.integrations.aiohttp`: ``ScalingMiddleware``, an aiohttp client
  middleware (extra ``[aiohttp]``);
* :mod:`scaling_credentials.integrations.opentelemetry`: ``instrument()``, metrics for a
  cache or an auth (extra ``[otel]``).

Each module imports its library at the top and raises a clear error naming the extra
when it is not installed.
"""
