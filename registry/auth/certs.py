"""`corral cert`: a private CA and a server certificate, so clients use https without --insecure.

An air-gapped site has no public CA to ask. corral creates one local CA (kept and reused, so every
certificate it issues is trusted once the CA is) and signs a server certificate for the given DNS
names and IP addresses. Clients trust `ca.crt` through SSL_CERT_FILE or the system store; Go (and
so ollama) then accepts corral — even under the name registry.ollama.ai, with a DNS override.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 825  # the longest validity Apple's TLS stack accepts; others accept it too


@dataclass(frozen=True)
class CertFiles:
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path
    created_ca: bool


def _write(path: Path, data: bytes, private: bool) -> None:
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(temp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


def _new_ca(now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"corral local CA ({os.uname().nodename})")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: not an EC key")
    return cert, key


def create_certificates(directory: Path, hosts: list[str], days: int = SERVER_DAYS) -> CertFiles:
    """Create (or reuse) `ca.crt`/`ca.key` in `directory`; issue `server.crt`/`server.key` for `hosts`."""
    if not hosts:
        raise ValueError("name at least one host name or IP address")
    directory = directory.expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    files = CertFiles(directory / "ca.crt", directory / "ca.key", directory / "server.crt",
                      directory / "server.key", created_ca=False)
    now = dt.datetime.now(dt.UTC)
    if files.ca_cert.exists() and files.ca_key.exists():
        ca_cert, ca_key = _load_ca(files.ca_cert, files.ca_key)
    else:
        ca_cert, ca_key = _new_ca(now)
        _write(files.ca_key, _key_pem(ca_key), private=True)
        _write(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
        files = CertFiles(files.ca_cert, files.ca_key, files.cert, files.key, created_ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(files.key, _key_pem(key), private=True)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return files


def trust_instructions(files: CertFiles, hosts: list[str]) -> str:
    """What an operator needs to do next, printed by `corral cert`."""
    ca = files.ca_cert
    example = f"{hosts[0]}/library/gemma3" if hosts[0] != "registry.ollama.ai" else "gemma3"
    return f"""\
CA certificate:     {ca}{"  (new)" if files.created_ca else "  (existing, reused)"}
Server certificate: {files.cert}  for {", ".join(hosts)}
Server key:         {files.key}

Start corral with https:
  corral serve --tls-cert {files.cert} --tls-key {files.key}

Make each client host trust the CA (copy {ca.name} there first), then e.g. `ollama pull {example}`:
  one process:     SSL_CERT_FILE=/path/to/{ca.name} ollama serve
                   (Go then trusts only this file; for ollama as a systemd service put
                   Environment=SSL_CERT_FILE=… in `systemctl edit ollama`)
  Debian/Ubuntu:   sudo cp {ca.name} /usr/local/share/ca-certificates/corral-ca.crt && sudo update-ca-certificates
  RHEL/Fedora:     sudo cp {ca.name} /etc/pki/ca-trust/source/anchors/corral-ca.crt && sudo update-ca-trust
  macOS:           sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {ca.name}
  Windows:         certutil -addstore -f ROOT {ca.name}
Keep {files.ca_key} private: whoever holds it can impersonate any host to these clients."""
