"""The error an integration raises when its library is not installed."""

from __future__ import annotations

__all__ = ["missing"]


def missing(library: str, *, extra: str) -> ImportError:
    """An :class:`ImportError` that says which extra installs ``library``."""
    return ImportError(
        f"scaling_credentials.integrations.{extra} needs {library}: "
        f"pip install 'scaling-credentials[{extra}]'"
    )
