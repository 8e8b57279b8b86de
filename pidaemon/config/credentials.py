"""Secrets the config names by file: found where systemd's LoadCredential= puts them.

One reader for `check-config`, reload and `run`, so all three refuse the same file with the
same words, and a file `run` could not use never passes `check-config`.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_SECRET_BYTES = 64 * 1024  # a password, not whatever file was named by mistake


class CredentialError(ValueError):
    """The secret file cannot be used; the message says why and what to do."""


def credential_path(name: str) -> Path:
    """A bare name is a systemd credential in $CREDENTIALS_DIRECTORY; a name with / is a path."""
    if "/" in name:
        return Path(name)
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise CredentialError(f"{name!r} is a bare name, looked up in $CREDENTIALS_DIRECTORY, "
                              f"which is not set here (systemd sets it for a unit with "
                              f"LoadCredential=); give the file's full path, or set "
                              f"CREDENTIALS_DIRECTORY to check")
    return Path(directory, name)


def read_secret(name: str) -> str:
    """The secret in file `name`, without its final newline; CredentialError if unusable."""
    path = credential_path(name)
    if path.exists() and not path.is_file():  # a directory, or a FIFO that would block
        raise CredentialError(f"cannot read {path}: not a regular file")
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise CredentialError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise CredentialError(f"cannot read {path}: larger than {MAX_SECRET_BYTES // 1024} KiB, "
                              f"not a password file")
    try:
        secret = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise CredentialError(f"cannot read {path}: not UTF-8 text") from None
    if not secret:
        raise CredentialError(f"{path} is empty; write the password into it")
    return secret
