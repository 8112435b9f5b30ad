"""Basic proxy authentication (RFC 9110 §11.7.2, RFC 7617) against a file of hashed passwords.

The file has one `user:pbkdf2_sha256$ITERATIONS$SALT$HASH` line per user (HASH in base64; '#'
comments); `python -m prefork_proxy passwd USER` prints such a line. A PBKDF2 check is deliberately
slow, so a header value that verified once is remembered (as its SHA-256, in a bounded set) and
the next request with it costs one dict lookup.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading

__all__ = ["BasicAuth", "hash_password", "verify_password", "load_credentials"]

_SCHEME = "pbkdf2_sha256"
_ITERATIONS = 200_000
_REMEMBER = 4096


def hash_password(password: str, iterations: int = _ITERATIONS, salt: str | None = None) -> str:
    salt = salt or secrets.token_hex(12)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"{_SCHEME}${iterations}${salt}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, iterations, salt, _ = encoded.split("$", 3)
        if scheme != _SCHEME:
            return False
        expected = hash_password(password, int(iterations), salt)
    except ValueError:
        return False
    return hmac.compare_digest(expected, encoded)


def load_credentials(path: str) -> dict[str, str]:
    """user -> encoded hash; ValueError naming the line when it is malformed."""
    credentials = {}
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, encoded = line.partition(":")
            if not sep or not user or not encoded.startswith(_SCHEME + "$"):
                raise ValueError(f"{path}:{number}: expected user:{_SCHEME}$...")
            credentials[user] = encoded
    return credentials


class BasicAuth:
    def __init__(self, credentials: dict[str, str], realm: str) -> None:
        self.credentials, self.realm = credentials, realm
        self.challenge = f'Basic realm="{realm}", charset="UTF-8"'
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()

    def check(self, header: str | None) -> bool:
        """True if the Proxy-Authorization value holds valid credentials."""
        if not header:
            return False
        fingerprint = hashlib.sha256(header.encode("latin-1")).digest()
        if fingerprint in self._verified:
            return True
        if not self._valid(header):
            return False
        with self._lock:
            if len(self._verified) >= _REMEMBER:
                self._verified.clear()
            self._verified.add(fingerprint)
        return True

    def _valid(self, header: str) -> bool:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        encoded = self.credentials.get(user)
        return bool(sep) and encoded is not None and verify_password(password, encoded)
