"""Makes an agent's DID key pair once, for every Bindu core that serves the agent to share.

A core keeps an agent's keys in `.bindu/agents/<name>/.bindu/{private,public}.pem` under its
working directory, and makes new ones when they are missing. Cores that serve one agent derive
the same DID (from the author and the name) but would each sign with a key of their own; mount
the folder this writes at that place in every core. Existing files are kept.

    python agent-keys.py FOLDER
"""
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


def main(folder: Path):
    private, public = folder / "private.pem", folder / "public.pem"
    if private.exists() and public.exists():
        print(f"keeping the keys in {folder}")
        return
    folder.mkdir(parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    # PKCS#8 private key, unencrypted, and SubjectPublicKeyInfo public key: what the core writes.
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    descriptor = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    print(f"wrote {private} and {public}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: agent-keys.py FOLDER")
    main(Path(sys.argv[1]))
