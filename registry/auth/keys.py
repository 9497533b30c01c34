"""corral's ed25519 identity and ollama's signature format.

ollama proves who it is to a registry by signing the token request with `~/.ollama/id_ed25519`
(OpenSSH format) and sending `<base64 SSH public key blob>:<base64 raw signature>`. corral uses the
same key format and the same header value everywhere a signature is needed — its own token
requests upstream, pushes to another corral, signed bundles — so one verifier checks them all and
an operator authorises a key by pasting its `.pub` line, exactly as for ssh.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_TYPE = "ssh-ed25519"
# base64(hex(sha256(""))): the body-hash field of a token request, whose body is always empty
ZERO_SUM = b"ZTNiMGM0NDI5OGZjMWMxNDlhZmJmNGM4OTk2ZmI5MjQyN2FlNDFlNDY0OWI5MzRjYTQ5NTk5MWI3ODUyYjg1NQ=="


class SignatureError(ValueError):
    """A signature value that is malformed, uses another key type, or does not verify."""


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """Load the OpenSSH ed25519 key at `path`, creating it (and `<path>.pub`) if missing.

    Creation publishes the key with a hard link, which fails if another process (the server and
    a CLI command starting together) won the race; the loser then reads the winner's key.
    """
    with contextlib.suppress(FileNotFoundError):
        return _load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    temp = path.with_name(f".{path.name}-{secrets.token_hex(6)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)
    except FileExistsError:
        return _load(path)
    finally:
        temp.unlink()
    path.with_name(path.name + ".pub").write_text(public_key_line(key) + "\n")
    return key


def _load(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an ed25519 key")
    return key


def public_key_line(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """`ssh-ed25519 AAAA…`, the line ollama writes to id_ed25519.pub and authorized_keys holds."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def key_blob(line: str) -> bytes:
    """The SSH wire blob of an `ssh-ed25519 AAAA… [comment]` line; ValueError if it is not one."""
    parts = line.split()
    if len(parts) < 2 or parts[0] != KEY_TYPE:
        raise ValueError("not an ssh-ed25519 public key line")
    public = serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError("not an ed25519 key")
    return base64.b64decode(parts[1])


def token_request_data(url: str) -> bytes:
    """What ollama signs to get a registry token: `GET,<full token URL>,<zero-sum>`."""
    return b"GET," + url.encode() + b"," + ZERO_SUM


def sign_challenge(key: Ed25519PrivateKey, data: bytes) -> str:
    """ollama's `Authorization` value for a signed request: `<public key blob>:<signature>`."""
    blob = public_key_line(key).split()[1]
    return f"{blob}:{base64.b64encode(key.sign(data)).decode()}"


def verify_challenge(value: str, data: bytes) -> bytes:
    """Check a `sign_challenge` value over `data`; return the signer's key blob.

    The caller decides whether that key is trusted (authorized_keys); this only proves possession.
    """
    blob_text, sep, signature_text = value.strip().partition(":")
    if not sep:
        raise SignatureError("signature must be <public key>:<signature>")
    try:
        blob = base64.b64decode(blob_text, validate=True)
        signature = base64.b64decode(signature_text, validate=True)
        public = serialization.load_ssh_public_key(f"{KEY_TYPE} {blob_text}".encode())
    except (binascii.Error, ValueError):
        raise SignatureError("malformed public key or signature") from None
    if not isinstance(public, Ed25519PublicKey):
        raise SignatureError("not an ed25519 key")
    try:
        public.verify(signature, data)
    except InvalidSignature:
        raise SignatureError("signature does not verify") from None
    return blob
