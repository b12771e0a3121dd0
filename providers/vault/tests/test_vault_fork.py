"""After os.fork() the child builds its own HTTP session (a pooled connection shared with
the parent would interleave both processes' bytes) and keeps the Vault token."""

from __future__ import annotations

import json
import os
import select
import sys
from typing import Any

import hvac
import pytest

from scaling_credentials.testing.provider_suite import assert_key_is, good_value
from scaling_credentials_vault import TokenAuth, VaultProvider

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def test_child_process_reads_with_a_new_session(
    bao: Any, bao_root: hvac.Client, secret_path: str, vault_env: pytest.MonkeyPatch
) -> None:
    key = good_value("fork")
    bao_root.secrets.kv.v2.create_or_update_secret(path=secret_path, secret={"api_key": key})
    provider = VaultProvider(secret_path, url=bao.url, auth=TokenAuth(bao.root_token))
    assert_key_is(provider.fetch(), key)  # warms the session and the login
    parent_session = provider._current.client.get().session

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 1
        try:
            os.close(read_end)
            session = provider._current.client.get().session
            result = {
                "ok": provider.fetch().reveal() == key,
                "new_session": session is not parent_session,
            }
            os.write(write_end, json.dumps(result).encode())
            code = 0
        except BaseException as exc:
            os.write(write_end, json.dumps({"error": type(exc).__name__}).encode())
        finally:
            sys.stdout.flush()
            os._exit(code)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 30)
        assert ready, "the child did not answer within 30 s"
        answer = json.loads(os.read(read_end, 4096) or b"{}")
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    assert answer == {"ok": True, "new_session": True}
    assert os.waitstatus_to_exitcode(status) == 0
    assert_key_is(provider.fetch(), key)  # the parent is unaffected
    assert provider._current.client.get().session is parent_session
