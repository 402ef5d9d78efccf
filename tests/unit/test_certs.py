"""`evcharging certs`: the local CA, the server certificates the Registry's HTTPS uses, and the
client certificates of OCPP chargers on security profile 3."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from evcharging.apps import cli
from evcharging.ops import certs


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def verify(folder: Path, leaf: Path, name: x509.GeneralName, ca: Path | None = None) -> None:
    """The chain check a TLS client makes (cryptography's own verifier, not a hand-made one)."""
    store = Store([load(ca or folder / "ca.pem")])
    verifier = PolicyBuilder().store(store).build_server_verifier(name)  # type: ignore[arg-type]
    verifier.verify(load(leaf), [])


def sans(path: Path) -> tuple[list[str], list[str]]:
    ext = load(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ext.get_values_for_type(x509.DNSName), [
        str(ip) for ip in ext.get_values_for_type(x509.IPAddress)
    ]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_makes_a_ca_and_a_server_certificate_for_every_name(tmp_path: Path) -> None:
    made = certs.init(tmp_path, ["registry.lan", "pc3"], ["10.0.0.3", "::1"])
    assert {m.path.name for m in made} == {"ca.pem", "ca.key", "server.pem", "server.key"}
    dns, ips = sans(tmp_path / "server.pem")
    assert dns == ["localhost", "registry.lan", "pc3"]
    assert ips == ["127.0.0.1", "10.0.0.3", "::1"]
    for name in ("localhost", "registry.lan", "pc3"):
        verify(tmp_path, tmp_path / "server.pem", x509.DNSName(name))
    for ip in ("127.0.0.1", "10.0.0.3"):
        verify(tmp_path, tmp_path / "server.pem", x509.IPAddress(ipaddress.ip_address(ip)))
    with pytest.raises(VerificationError):
        verify(tmp_path, tmp_path / "server.pem", x509.DNSName("elsewhere.lan"))


def test_the_ca_may_only_sign_and_the_server_certificate_is_for_servers(tmp_path: Path) -> None:
    certs.init(tmp_path)
    ca = load(tmp_path / "ca.pem")
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    server = load(tmp_path / "server.pem")
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage
    now = datetime.now(UTC)
    assert server.not_valid_before_utc < now < server.not_valid_after_utc
    assert (server.not_valid_after_utc - now).days <= certs.SERVER_DAYS
    assert server.not_valid_after_utc <= ca.not_valid_after_utc


def test_keys_are_0600_and_python_ssl_loads_the_pair(tmp_path: Path) -> None:
    certs.init(tmp_path)
    assert mode(tmp_path / "ca.key") == 0o600
    assert mode(tmp_path / "server.key") == 0o600
    assert mode(tmp_path / "server.pem") == 0o644
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    client = ssl.create_default_context(cafile=tmp_path / "ca.pem")
    assert client.get_ca_certs()[0]["subject"]


def test_nothing_is_overwritten_without_force(tmp_path: Path) -> None:
    certs.init(tmp_path)
    before = (tmp_path / "ca.pem").read_bytes()
    with pytest.raises(certs.CertsError, match="already exist; --force replaces them"):
        certs.init(tmp_path)
    assert (tmp_path / "ca.pem").read_bytes() == before
    certs.init(tmp_path, force=True)
    assert (tmp_path / "ca.pem").read_bytes() != before
    assert mode(tmp_path / "ca.key") == 0o600


def test_server_issues_another_certificate_from_the_same_ca(tmp_path: Path) -> None:
    certs.init(tmp_path)
    made = certs.issue(tmp_path, "registry", ["pc3"], ["192.168.1.30"])
    assert [m.path.name for m in made] == ["registry.pem", "registry.key"]
    assert mode(tmp_path / "registry.key") == 0o600
    verify(tmp_path, tmp_path / "registry.pem", x509.DNSName("pc3"))
    with pytest.raises(certs.CertsError, match="already exist"):
        certs.issue(tmp_path, "registry")
    with pytest.raises(certs.CertsError, match="run certs init"):
        certs.issue(tmp_path / "empty", "registry")


def test_a_certificate_from_another_ca_does_not_verify(tmp_path: Path) -> None:
    certs.init(tmp_path / "one")
    certs.init(tmp_path / "two")
    with pytest.raises(VerificationError):
        verify(
            tmp_path / "one",
            tmp_path / "one" / "server.pem",
            x509.DNSName("localhost"),
            ca=tmp_path / "two" / "ca.pem",
        )


@pytest.mark.parametrize(
    ("rule", "value"),
    [(certs.host_name, "bad host!"), (certs.ip_address, "10.0.0"), (certs.server_name, "ca")],
)
def test_bad_names_are_refused(rule: object, value: str) -> None:
    with pytest.raises(ValueError, match="not a"):
        rule(value)  # type: ignore[operator]


def test_the_cli_prints_what_it_made_and_never_a_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "certs"
    assert (
        cli.main(["certs", "init", "--dir", str(folder), "--host", "pc3", "--ip", "10.0.0.3"]) == 0
    )
    out = capsys.readouterr().out
    assert "ca.pem" in out
    assert "DNS:pc3" in out
    assert "IP:10.0.0.3" in out
    assert "PRIVATE KEY" not in out
    for key in ("ca.key", "server.key"):
        body = (folder / key).read_text().splitlines()[1]
        assert body not in out
    assert cli.main(["certs", "init", "--dir", str(folder)]) == 2
    [error] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "already exist; --force replaces them" in error.getMessage()
    caplog.clear()  # the one expected error line
    assert cli.main(["certs", "server", "--dir", str(folder), "--name", "registry"]) == 0


def test_the_cli_refuses_a_bad_address_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["certs", "init", "--ip", "300.1.1.1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "not an IP address" in err
    assert len(err.strip().splitlines()) == 1


def verify_client(folder: Path, leaf: Path) -> x509.Certificate:
    """The chain check a TLS server makes of a client's certificate, clientAuth required (the
    Web PKI's rule that a leaf names itself in a SubjectAltName is a server's rule: a charger is
    named by its subject CN, as the OCPP 1.6 security whitepaper says)."""
    ee = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
    )
    verifier = (
        PolicyBuilder()
        .store(Store([load(folder / "ca.pem")]))
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)
        .build_client_verifier()
    )
    chain = verifier.verify(load(leaf), []).chain
    return chain[0]


def test_client_issues_a_charger_certificate_named_by_its_cp_id(tmp_path: Path) -> None:
    certs.init(tmp_path)
    files = certs.issue_client(tmp_path, "CP-7:a_b")
    assert (files.cert.name, files.key.name) == ("cp-CP-7:a_b.pem", "cp-CP-7:a_b.key")
    assert [m.path for m in files.made] == [files.cert, files.key]
    assert mode(files.key) == 0o600
    assert mode(files.cert) == 0o644
    leaf = verify_client(tmp_path, files.cert)
    [cn] = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert cn.value == "CP-7:a_b"
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    now = datetime.now(UTC)
    assert leaf.not_valid_before_utc < now < leaf.not_valid_after_utc
    assert (leaf.not_valid_after_utc - now).days <= certs.CLIENT_DAYS
    assert isinstance(leaf.public_key(), type(load(tmp_path / "server.pem").public_key()))
    # a server certificate is no client's, nor a client certificate a server's
    with pytest.raises(VerificationError):
        verify_client(tmp_path, tmp_path / "server.pem")
    with pytest.raises(VerificationError):
        verify(tmp_path, files.cert, x509.DNSName("localhost"))


def test_client_refuses_a_bad_id_no_ca_and_overwriting(tmp_path: Path) -> None:
    with pytest.raises(certs.CertsError, match="run certs init"):
        certs.issue_client(tmp_path, "CP1")
    certs.init(tmp_path)
    with pytest.raises(certs.CertsError, match="not a CP id"):
        certs.issue_client(tmp_path, "../CP1")
    first = certs.issue_client(tmp_path, "CP1").cert.read_bytes()
    with pytest.raises(certs.CertsError, match="already exist; --force replaces them"):
        certs.issue_client(tmp_path, "CP1")
    assert certs.issue_client(tmp_path, "CP1", force=True).cert.read_bytes() != first
    other = tmp_path / "other"
    certs.init(other)
    with pytest.raises(VerificationError):
        verify_client(other, tmp_path / "cp-CP1.pem")


async def test_a_tls_server_that_requires_client_certificates_sees_the_cp_id(
    tmp_path: Path,
) -> None:
    """What EV_OCPP does on profile 3: Python's ssl, CERT_REQUIRED against ca.pem, CN = the id."""
    certs.init(tmp_path)
    files = certs.issue_client(tmp_path, "CP9")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tmp_path / "ca.pem")
    server_ctx.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    seen: list[object] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("peercert")["subject"])
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    async with server:
        client_ctx = ssl.create_default_context(cafile=tmp_path / "ca.pem")
        client_ctx.load_cert_chain(files.cert, files.key)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        await reader.read()
        writer.close()
    assert seen == [((("organizationName", "EVCharging Network"),), (("commonName", "CP9"),))]


def test_the_cli_issues_a_client_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "certs"
    certs.init(folder)
    assert cli.main(["certs", "client", "--dir", str(folder), "--cp", "CP5"]) == 0
    out = capsys.readouterr().out
    assert "cp-CP5.pem: client certificate for CP CP5" in out
    assert "PRIVATE KEY" not in out
    verify_client(folder, folder / "cp-CP5.pem")
    with pytest.raises(SystemExit) as info:
        cli.main(["certs", "client", "--dir", str(folder), "--cp", "a b"])
    assert info.value.code == 2
    assert "not an id" in capsys.readouterr().err
