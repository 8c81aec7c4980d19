"""ed25519 keys and signatures for bundles (the `cryptography` package; no home-made crypto).

A private key file is PEM (PKCS#8, as `bendi keygen` writes it) or an OpenSSH private key
(`ssh-keygen -t ed25519`); a public key file is one OpenSSH line (`ssh-ed25519 AAAA... comment`)
or PEM. A bundle signature signs the exact bytes of the bundle's index, which lists the sha256 of
every other file in it.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bendi.errors import BadSignature, InvalidRequest


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public: Ed25519PublicKey) -> str:
    """`SHA256:...` as ssh-keygen -l prints it."""
    digest = hashlib.sha256(_ssh_blob(public)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _ssh_blob(public: Ed25519PublicKey) -> bytes:
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return base64.b64decode(line.split()[1])


def public_line(public: Ed25519PublicKey, comment: str = "") -> str:
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line.decode() + (f" {comment}" if comment else "")


def generate_keypair(path: Path, comment: str = "bendi bundle signing key") -> tuple[Path, Path]:
    """Write a new private key to `path` (mode 0600) and its public key to `path.pub`."""
    pub_path = path.with_name(path.name + ".pub")
    for p in (path, pub_path):
        if p.exists():
            raise InvalidRequest(f"{p} already exists; choose another file or remove it first")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub_path.write_text(public_line(key.public_key(), comment) + "\n")
    return path, pub_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"{path}: cannot read the signing key ({exc.strerror})") from None
    key: object
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"{path}: not an unencrypted ed25519 private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidRequest(f"{path}: the key is not ed25519")
    return key


def load_public_keys(path: Path) -> list[Ed25519PublicKey]:
    """The ed25519 public keys in a file (one OpenSSH line each, or PEM), or in every file of a
    directory (an administrators' keyring)."""
    if path.is_dir():
        return [k for child in sorted(path.iterdir()) if child.is_file() for k in load_public_keys(child)]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"{path}: cannot read the public key ({exc.strerror})") from None
    keys: list[Ed25519PublicKey] = []
    try:
        if b"BEGIN PUBLIC KEY" in data:
            key = serialization.load_pem_public_key(data)
            keys.append(key) if isinstance(key, Ed25519PublicKey) else None
        else:
            for line in data.decode().splitlines():
                if line.strip().startswith("ssh-ed25519"):
                    key = serialization.load_ssh_public_key(line.strip().encode())
                    if isinstance(key, Ed25519PublicKey):
                        keys.append(key)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{path}: not an ed25519 public key ({exc})") from None
    if not keys:
        raise InvalidRequest(f"{path}: no ed25519 public key in it")
    return keys


@dataclass
class Signature:
    public_key: str  # OpenSSH line
    signature: str  # base64

    def to_dict(self) -> dict[str, str]:
        return {"algorithm": "ed25519", "signed": "index.json", "public_key": self.public_key,
                "signature": self.signature}


def sign(key: Ed25519PrivateKey, message: bytes) -> Signature:
    return Signature(public_line(key.public_key()), base64.b64encode(key.sign(message)).decode())


def verify(data: dict[str, object], message: bytes, trusted: list[Ed25519PublicKey]) -> str:
    """Check a bundle signature; returns the signer's fingerprint.

    With trusted keys, the signer must be one of them; without, the signature is checked against
    the key it names (which proves integrity, not who signed)."""
    try:
        if data.get("algorithm") != "ed25519":
            raise BadSignature(f"unsupported signature algorithm {data.get('algorithm')!r}")
        named = serialization.load_ssh_public_key(str(data["public_key"]).encode())
        raw_signature = base64.b64decode(str(data["signature"]), validate=True)
    except (KeyError, ValueError, TypeError) as exc:
        raise BadSignature(f"the bundle's signature file is malformed ({exc})") from None
    if not isinstance(named, Ed25519PublicKey):
        raise BadSignature("the bundle's signature key is not ed25519")
    if trusted:
        match = [k for k in trusted if _raw(k) == _raw(named)]
        if not match:
            raise BadSignature(f"the bundle is signed by {fingerprint(named)}, which is not a "
                                 "trusted key; nothing was installed")
        named = match[0]
    try:
        named.verify(raw_signature, message)
    except InvalidSignature:
        raise BadSignature("the bundle's signature does not match its contents (tampered or "
                             "damaged); nothing was installed") from None
    return fingerprint(named)
