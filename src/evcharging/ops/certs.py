"""A small local certificate authority for the network's TLS (`evcharging certs ...`).

Why our own CA: the network runs on machines without public DNS names, so no public CA can
certify them; a CA made here, whose `ca.pem` is copied to every Monitor (`--ca-file`), lets the
Monitor check it talks to the real Registry and never needs `verify=False`.  Everything is made
with `cryptography`: EC P-256 keys (small, fast handshakes, what browsers and Python accept
everywhere), a CA certificate limited to signing certificates, and server certificates whose
SubjectAltNames name every host and address the server is reached by.

The same CA also issues client certificates: an OCPP charger on security profile 3 proves who it
is by a certificate whose subject CN is its CP id (OCPP 1.6 Security Whitepaper), checked by
EV_OCPP against this CA.

Files in the folder: `ca.pem`, `ca.key` (0600), per server `NAME.pem`, `NAME.key` (0600), and
per charger `cp-ID.pem`, `cp-ID.key` (0600); `init` makes the CA and the server `server`.
Nothing is overwritten without `force`; a key is never printed.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from evcharging.contracts.fields import ID_RULE, is_valid_id

CA_DAYS = 5 * 365 + 1  # the CA outlives several server certificates
SERVER_DAYS = 397  # what browsers accept for a server certificate; renew with `certs server`
CLIENT_DAYS = 397  # a charger's certificate, renewed like a server's (`certs client --force`)
BACKDATE = timedelta(minutes=5)  # a host whose clock is a little behind still accepts them
ALWAYS_HOSTS = ("localhost",)
ALWAYS_IPS = ("127.0.0.1",)
ORGANISATION = "EVCharging Network"

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*\.?")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class CertsError(Exception):
    """A request that cannot be carried out (files in the way, no CA, a bad name): one line."""


def host_name(text: str) -> str:
    """A DNS name for a SubjectAltName (an IP address given as a host is accepted too)."""
    value = text.strip()
    if not (_HOST_RE.fullmatch(value) and len(value) <= 253) and not _is_ip(value):
        raise ValueError(f"not a host name: {text!r}")
    return value


def ip_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"not an IP address: {text!r}") from None


def server_name(text: str) -> str:
    """The base name of a server's files (NAME.pem, NAME.key)."""
    if not _NAME_RE.fullmatch(text) or text == "ca":
        raise ValueError(f"not a certificate name (letters, digits, _ . -; not 'ca'): {text!r}")
    return text


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Made:
    """One file written, and what it is (for the operator's summary; never a key's content)."""

    path: Path
    what: str

    def line(self) -> str:
        return f"{self.path}: {self.what}"


@dataclass(frozen=True, slots=True)
class Names:
    """Who a server certificate is for: DNS names and IP addresses (localhost always in)."""

    hosts: tuple[str, ...]
    ips: tuple[Address, ...]

    @classmethod
    def of(cls, hosts: Iterable[str] = (), ips: Iterable[str] = ()) -> Names:
        dns: list[str] = []
        addresses: list[Address] = [ipaddress.ip_address(ip) for ip in ALWAYS_IPS]
        for host in (*ALWAYS_HOSTS, *hosts):
            if _is_ip(host):
                addresses.append(ipaddress.ip_address(host))
            elif host.lower() not in (h.lower() for h in dns):
                try:
                    dns.append(host_name(host))
                except ValueError as exc:
                    raise CertsError(str(exc)) from None
        for ip in ips:
            try:
                addresses.append(ipaddress.ip_address(ip))
            except ValueError:
                raise CertsError(f"not an IP address: {ip!r}") from None
        unique_ips = tuple(dict.fromkeys(addresses))
        return cls(tuple(dns), unique_ips)

    def sans(self) -> x509.SubjectAlternativeName:
        general: list[x509.GeneralName] = [x509.DNSName(h) for h in self.hosts]
        general += [x509.IPAddress(ip) for ip in self.ips]
        return x509.SubjectAlternativeName(general)

    def words(self) -> str:
        return ", ".join([*(f"DNS:{h}" for h in self.hosts), *(f"IP:{ip}" for ip in self.ips)])


@dataclass(frozen=True, slots=True)
class CertFolder:
    """Where the CA and the servers' certificates live."""

    dir: Path

    @property
    def ca_pem(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    def pem(self, name: str) -> Path:
        return self.dir / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def client_pem(self, cp_id: str) -> Path:
        return self.dir / f"cp-{cp_id}.pem"

    def client_key(self, cp_id: str) -> Path:
        return self.dir / f"cp-{cp_id}.key"


@dataclass(frozen=True, slots=True)
class ClientFiles:
    """A charger's certificate and key as written, and the operator's summary of them."""

    cert: Path
    key: Path
    made: tuple[Made, ...]


def init(
    folder: Path,
    hosts: Sequence[str] = (),
    ips: Sequence[str] = (),
    *,
    force: bool = False,
    now: datetime | None = None,
) -> list[Made]:
    """A new CA and the certificate `server` signed by it; CertsError if files are in the way."""
    where = CertFolder(folder)
    names = Names.of(hosts, ips)
    targets = [where.ca_pem, where.ca_key, where.pem("server"), where.key("server")]
    _refuse_overwrite(targets, force)
    at = now or datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _ca_certificate(ca_key, at)
    folder.mkdir(parents=True, exist_ok=True)
    _write_key(where.ca_key, ca_key)
    _write_cert(where.ca_pem, ca_cert)
    made = [
        Made(
            where.ca_pem,
            f"CA certificate {_subject(ca_cert)}, {_validity(ca_cert)}, "
            f"SHA-256 {fingerprint(ca_cert)} (copy it to every Monitor: --ca-file)",
        ),
        Made(where.ca_key, "CA private key (mode 0600; keep it off the servers)"),
    ]
    return made + _issue(where, "server", names, ca_key, ca_cert, at)


def issue(
    folder: Path,
    name: str,
    hosts: Sequence[str] = (),
    ips: Sequence[str] = (),
    *,
    force: bool = False,
    now: datetime | None = None,
) -> list[Made]:
    """Another server certificate (NAME.pem, NAME.key) signed by the folder's existing CA."""
    where = CertFolder(folder)
    names = Names.of(hosts, ips)
    try:
        server_name(name)
    except ValueError as exc:
        raise CertsError(str(exc)) from None
    _refuse_overwrite([where.pem(name), where.key(name)], force)
    ca_key, ca_cert = load_ca(where)
    return _issue(where, name, names, ca_key, ca_cert, now or datetime.now(UTC))


def issue_client(
    folder: Path, cp_id: str, *, force: bool = False, now: datetime | None = None
) -> ClientFiles:
    """A client certificate for the charger `cp_id` (subject CN = the id, extended key usage
    clientAuth: OCPP security profile 3) signed by the folder's existing CA."""
    if not is_valid_id(cp_id):
        raise CertsError(f"not a CP id ({ID_RULE}): {cp_id!r}")
    where = CertFolder(folder)
    pem, key_path = where.client_pem(cp_id), where.client_key(cp_id)
    _refuse_overwrite([pem, key_path], force)
    ca_key, ca_cert = load_ca(where)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _client_certificate(key, cp_id, ca_key, ca_cert, now or datetime.now(UTC))
    _write_key(key_path, key)
    _write_cert(pem, cert)
    made = (
        Made(pem, f"client certificate for CP {cp_id} (CN={cp_id}, clientAuth), {_validity(cert)}"),
        Made(key_path, "client private key (mode 0600; give it to that charger only)"),
    )
    return ClientFiles(pem, key_path, made)


def load_ca(where: CertFolder) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        ca_cert = x509.load_pem_x509_certificate(where.ca_pem.read_bytes())
        key = serialization.load_pem_private_key(where.ca_key.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise CertsError(f"no CA in {where.dir} ({exc.filename} missing): run certs init") from None
    except ValueError as exc:
        raise CertsError(f"the CA in {where.dir} cannot be read: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != ca_cert.public_key():
        raise CertsError(f"{where.ca_key} is not the key of {where.ca_pem}")
    return key, ca_cert


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _refuse_overwrite(targets: Sequence[Path], force: bool) -> None:
    present = [str(p) for p in targets if p.exists()]
    if present and not force:
        raise CertsError(f"{', '.join(present)} already exist; --force replaces them")


def _issue(
    where: CertFolder,
    name: str,
    names: Names,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    at: datetime,
) -> list[Made]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _server_certificate(key, names, ca_key, ca_cert, at)
    _write_key(where.key(name), key)
    _write_cert(where.pem(name), cert)
    return [
        Made(where.pem(name), f"server certificate for {names.words()}, {_validity(cert)}"),
        Made(where.key(name), "server private key (mode 0600)"),
    ]


def _ca_certificate(key: ec.EllipticCurvePrivateKey, at: datetime) -> x509.Certificate:
    serial = x509.random_serial_number()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            # a CA made again gets another name: a Monitor's error says which CA it trusts
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"{ORGANISATION} local CA {serial % 16**8:08x}"
            ),
        ]
    )
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(at - BACKDATE)
        .not_valid_after(at + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _server_certificate(
    key: ec.EllipticCurvePrivateKey,
    names: Names,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    at: datetime,
) -> x509.Certificate:
    return (
        _leaf(key, names.hosts[0], ca_cert, at, SERVER_DAYS)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(names.sans(), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _client_certificate(
    key: ec.EllipticCurvePrivateKey,
    cp_id: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    at: datetime,
) -> x509.Certificate:
    return (
        _leaf(key, cp_id, ca_cert, at, CLIENT_DAYS)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _leaf(
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    ca_cert: x509.Certificate,
    at: datetime,
    days: int,
) -> x509.CertificateBuilder:
    """What a server's and a charger's certificates share: not a CA, signing only, the CA's key
    identifier, and never outliving the CA."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    not_after = min(at + timedelta(days=days), ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(path, data, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically: a temporary file created with `mode` from the start (a key is never readable
    by others, not even for a moment), then renamed over the target."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)  # the umask may have taken bits away; set exactly
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _subject(cert: x509.Certificate) -> str:
    return repr(cert.subject.rfc4514_string())


def _validity(cert: x509.Certificate) -> str:
    return f"valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
