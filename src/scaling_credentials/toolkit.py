"""The provider toolkit: what every provider needs, first-party or third-party.

The AWS and Vault providers are built from these pieces and nothing private; a new
provider should be a small file that uses them too (see docs/writing-a-provider.md).

Values and keys
    :func:`make_key` builds the :class:`~scaling_credentials.ApiKey` with an error that
    names the source; :func:`decode_text`, :func:`field_from_json` and
    :func:`field_from_object` turn raw bytes, JSON documents and decoded JSON objects
    (a Vault KV secret's data) into the key's text; :func:`json_with_field` writes a key
    into one field of a JSON document, keeping the others. None of them ever quotes the
    value, nor keeps the decoder's exception (which holds the document) in the chain.
Files
    :func:`read_capped_file` reads a small secret file: capped, never blocking on a
    FIFO, surviving the kubelet's ``..data`` swap, with errors that say what to fix.
Clients and fork safety
    :class:`PerProcess` holds a client built on first use, once per process (a child of
    ``os.fork()`` builds its own); :func:`after_fork` runs a reset in the child.
Secrets in messages
    :func:`redact` masks keys, Vault tokens and known credentials in any text;
    :func:`looks_like_key` tells a key pasted where a name belongs; :func:`get_logger`
    gives a logger whose records are always redacted; :func:`mask` is the masked form
    of one key.
Options and URIs
    :func:`seconds`, :func:`whole_number`, :func:`port_number`, :func:`text_option` and
    :func:`flag` check configuration values with typed errors;
    :func:`format_query` builds the query part of a ``describe()``;
    :func:`is_loopback` tells whether a host surely names this machine (where plain
    ``http`` may carry a credential). Source URIs are
    parsed by :class:`~scaling_credentials.SourceURI`, whose :meth:`~SourceURI.param`
    and :meth:`~SourceURI.flag` read parameters.
"""

from ._authcore import is_loopback
from ._fileio import MAX_FILE_SIZE, read_capped_file
from ._fork import PerProcess, after_fork
from ._key import KEY_PREFIX, mask
from ._options import flag, format_query, port_number, seconds, text_option, whole_number
from ._redact import get_logger, looks_like_key, redact
from ._values import (
    decode_text,
    field_from_json,
    field_from_object,
    json_type,
    json_with_field,
    make_key,
)

__all__ = [
    "KEY_PREFIX",
    "MAX_FILE_SIZE",
    "PerProcess",
    "after_fork",
    "decode_text",
    "field_from_json",
    "field_from_object",
    "flag",
    "format_query",
    "get_logger",
    "is_loopback",
    "json_type",
    "json_with_field",
    "looks_like_key",
    "make_key",
    "mask",
    "port_number",
    "read_capped_file",
    "redact",
    "seconds",
    "text_option",
    "whole_number",
]
