"""Versions signed by the learner, so that registry tags alone cannot make a robot load a model.

The digests tag says what a version's files are, and anyone who may write MLflow tags may change
it: replace the weights in storage, write their sha256 into the tag, and every robot would load
them. So the learner also signs each version with an Ed25519 key only it holds, over the model's
name, the version's registration run and its digests; robots check that signature with the
public key before they trust the digests. Edited digests fail (the signature no longer covers
them), and so does a signature copied from another version (it names another run); MLflow sets a
version's run when the version is created, and no tag changes it.

The key is a PEM file (`registry.signing_key_file`, unset = keys/registry-signing.pem in the
state directory, made on first use with mode 0600). Robots are given only the public key
(`registry.verify_key`, printed by `fleet rollout public-key`); where it is unset they read it
from the signing key file, as on the one machine of the embedded stack.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from infra.errors import UsageError
from infra.settings import Settings

SIGNATURE_TAG = "weights_signature"  # base64 Ed25519 signature over `signed_bytes`


def signed_bytes(name: str, run_id: str, digests: dict[str, str]) -> bytes:
    return json.dumps({"model": name, "run_id": run_id, "digests": digests}, sort_keys=True).encode()


def sign(settings: Settings, name: str, run_id: str, digests: dict[str, str]) -> str:
    signature = _signing_key(settings, create=True).sign(signed_bytes(name, run_id, digests))
    return base64.b64encode(signature).decode()


def is_signed_by_the_learner(settings: Settings, name: str, run_id: str, digests: dict[str, str], tag: str) -> bool:
    try:
        verify_key(settings).verify(base64.b64decode(tag, validate=True), signed_bytes(name, run_id, digests))
        return True
    except (InvalidSignature, binascii.Error, ValueError):
        return False


def verify_key(settings: Settings) -> Ed25519PublicKey:
    if configured := settings.registry.verify_key:
        try:
            return Ed25519PublicKey.from_public_bytes(base64.b64decode(configured, validate=True))
        except (binascii.Error, ValueError) as e:
            raise UsageError(
                "registry.verify_key is not a base64 Ed25519 public key",
                hint="copy it from `fleet rollout public-key` on the learner",
            ) from e
    return _signing_key(settings, create=False).public_key()


def public_key_text(settings: Settings) -> str:
    raw = _signing_key(settings, create=True).public_key()
    return base64.b64encode(raw.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def _signing_key(settings: Settings, create: bool) -> Ed25519PrivateKey:
    path = settings.signing_key_path
    if not path.exists():
        if not create:
            raise UsageError(
                f"no key to check model signatures with: {path} does not exist and registry.verify_key is unset",
                hint="give robots the learner's public key: FLEET_REGISTRY__VERIFY_KEY=$(fleet rollout public-key)",
            )
        _create(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path} is not an Ed25519 private key", hint="remove it to have a new one made")
    return key


def _create(path: Path) -> None:
    """Write a new key, atomically: two processes starting at once end with one key, not two."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.link(tmp, path)  # fails if another process made it first: theirs is kept
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
