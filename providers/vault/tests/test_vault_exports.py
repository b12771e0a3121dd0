"""The public names of scaling_credentials_vault are pinned (a rename is a visible
decision), and importing the package does not import hvac."""

from __future__ import annotations

import subprocess
import sys

import scaling_credentials_vault

EXPECTED = [
    "AppRoleAuth",
    "JWTAuth",
    "KubernetesAuth",
    "TokenAuth",
    "VaultAuth",
    "VaultProvider",
    "VaultToken",
]


def test_exported_members() -> None:
    assert scaling_credentials_vault.__all__ == EXPECTED
    assert sorted(scaling_credentials_vault.__all__) == scaling_credentials_vault.__all__
    for name in EXPECTED:
        item = getattr(scaling_credentials_vault, name)
        assert item.__module__.startswith("scaling_credentials_vault.")
        assert item.__doc__, name


def test_import_does_not_import_hvac() -> None:
    code = (
        "import sys, scaling_credentials_vault as v\n"
        "v.VaultProvider('scaling/api', url='http://127.0.0.1:8200', auth=v.TokenAuth('t'))\n"
        "v.VaultProvider.from_uri\n"
        "assert 'hvac' not in sys.modules and 'requests' not in sys.modules, 'imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
