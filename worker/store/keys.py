"""Where the token signing keys come from: the settings, or a key file beside the SQLite database.

Production sets `tokens.keys` (and `tokens.active` when there are several). The
embedded mode needs no setup: on first use a random key is written to
`<database file>.keys` (mode 0600) and every later start, and every `unsubd token`
run against the same database, reads the same key back, so links stay valid.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy.engine import make_url

from config import ConfigError, Settings
from handlers.tokens import Keyring

log = logging.getLogger("unsubd.keys")

KEY_FILE_SUFFIX = ".keys"


def key_file_for(database_url: str) -> Path | None:
    """The key file beside a SQLite database file; None for PostgreSQL or an in-memory database."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).with_name(Path(url.database).name + KEY_FILE_SUFFIX)


def keyring_for(settings: Settings) -> Keyring | None:
    """The keyring to sign and verify with, or None when none can be had.

    None only for a PostgreSQL database without `tokens.keys`: a key that lived in one
    process would break links signed by another, so production must configure keys.
    An in-memory SQLite database (tests) gets a key that lives as long as the process.
    Raises ConfigError for an unreadable or malformed key file, naming the file.
    """
    tokens = settings.tokens
    if tokens.keys:
        active = tokens.active_key_id
        assert active is not None
        return Keyring({k: v.get_secret_value().encode("utf-8") for k, v in tokens.keys.items()}, active)
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite":
        return None
    path = key_file_for(settings.database_url)
    if path is None:
        return _ephemeral()
    return load_or_create(path)


_EPHEMERAL: Keyring | None = None


def _ephemeral() -> Keyring:
    global _EPHEMERAL
    if _EPHEMERAL is None:
        _EPHEMERAL = Keyring({"mem": secrets.token_bytes(32)}, "mem")
    return _EPHEMERAL


def load_or_create(path: Path) -> Keyring:
    """Read the key file at `path`, creating it with one new random key if it does not exist.

    Creation is atomic (written to a private temporary file, then hard-linked into
    place), so two processes starting at once end up with the same key.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key_id = "k" + secrets.token_hex(3)
        content = json.dumps({"active": key_id, "keys": {key_id: secrets.token_urlsafe(32)}}, indent=2) + "\n"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
                log.info("created a token signing key beside the database", extra={"file": str(path)})
            except FileExistsError:
                pass                                   # another process was first: use its key
        finally:
            tmp.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> Keyring:
    try:
        mode = path.stat().st_mode
        data = json.loads(path.read_text(encoding="utf-8"))
        keys = {str(k): str(v).encode("utf-8") for k, v in data["keys"].items()}
        ring = Keyring(keys, str(data["active"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"token key file {path}: {exc}; fix it, or set tokens.keys (UNSUBD_TOKENS__KEYS)") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the token key file is readable by others; chmod 600 it", extra={"file": str(path)})
    return ring


def settings_with_keys(settings: Settings) -> Settings:
    """`settings` with the embedded key file's keys in `tokens.keys`, so every part
    (the sandboxed classifier too) verifies with the same keys. Unchanged when keys
    are configured, or when none can be had (PostgreSQL without keys)."""
    if settings.tokens.keys:
        return settings
    ring = keyring_for(settings)
    if ring is None:
        return settings
    keys = {kid: SecretStr(secret.decode("utf-8")) for kid, secret in ring.secrets.items()}
    tokens = settings.tokens.model_copy(update={"keys": keys, "active": ring.active})
    return settings.model_copy(update={"tokens": tokens})
