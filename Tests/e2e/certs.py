"""Certificates for the TLS tests: good ones from `bindu-mesh certs dev`, bad ones made here."""
import datetime
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness import BIN_DIR


def dev(directory: Path, *args) -> Path:
    """`bindu-mesh certs dev --out directory` (reuses the CA already there)."""
    subprocess.run([str(BIN_DIR / "bindu-mesh"), "certs", "dev", "--out", str(directory), *args],
                   check=True, capture_output=True)
    return directory


def serial_of(pem_or_der: bytes) -> int:
    if pem_or_der.startswith(b"-----"):
        return x509.load_pem_x509_certificate(pem_or_der).serial_number
    return x509.load_der_x509_certificate(pem_or_der).serial_number


def _write(directory: Path, name: str, key, certificate):
    (directory / f"{name}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _certificate(subject, issuer_name, issuer_key, key, not_before, not_after, sans, ca=False):
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def client_from_other_ca(directory: Path) -> Path:
    """A client certificate signed by a CA the mesh does not trust: other-client.pem."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "some other CA")])
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate("other client", ca_name, ca_key, key, now - datetime.timedelta(hours=1),
                        now + datetime.timedelta(days=1), [x509.UniformResourceIdentifier("spiffe://bindu-mesh/dev-client")])
    _write(directory, "other-client", key, cert)
    return directory / "other-client.pem"


def expired_client(directory: Path) -> Path:
    """A client certificate from the dev CA that expired yesterday: expired-client.pem."""
    ca = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), password=None)
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate("expired client", ca.subject, ca_key, key, now - datetime.timedelta(days=10),
                        now - datetime.timedelta(days=1), [x509.UniformResourceIdentifier("spiffe://bindu-mesh/dev-client")])
    _write(directory, "expired-client", key, cert)
    return directory / "expired-client.pem"
