"""TLS contexts, the committed development certificate and `gen-certs`.

Handshakes run in memory (`memory_stream_pair`) with both sides in one
nursery, so a verification failure shows up exactly as a client would see it.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import ssl
import stat
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme
from cryptography import x509

from trio_chat import certs, cli, tls
from trio_chat.transport import SocketTLSTransport, TransportError

#: Generous bound on an in-memory handshake: a hang fails instead of blocking.
HANDSHAKE_DEADLINE = 10.0
#: The committed certificate must be replaced well before it expires.
MIN_REMAINING_VALIDITY = datetime.timedelta(days=365)
PAYLOAD = b"hello over TLS\n"

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


# --- helpers -----------------------------------------------------------------


async def _handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str
) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    """Both handshakes, concurrently; returns (server, client) streams."""
    server_transport, client_transport = trio.testing.memory_stream_pair()
    server = trio.SSLStream(server_transport, server_ctx, server_side=True)
    client = trio.SSLStream(client_transport, client_ctx, server_hostname=hostname)
    with trio.fail_after(HANDSHAKE_DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            nursery.start_soon(client.do_handshake)
    return server, client


async def _failed_client_handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str
) -> ssl.SSLCertVerificationError:
    """Run a handshake the client must reject; return the client's reason."""
    server_transport, client_transport = trio.testing.memory_stream_pair()
    server = trio.SSLStream(server_transport, server_ctx, server_side=True)
    client = trio.SSLStream(client_transport, client_ctx, server_hostname=hostname)

    async def serve() -> None:
        # The server sees the client give up; that is not what is under test.
        with pytest.raises(trio.BrokenResourceError):
            await server.do_handshake()

    with trio.fail_after(HANDSHAKE_DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            with pytest.raises(trio.BrokenResourceError) as failure:
                await client.do_handshake()
            await client_transport.aclose()
    cause = failure.value.__cause__
    assert isinstance(cause, ssl.SSLCertVerificationError)
    return cause


async def _receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    while True:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, "stream closed early"
        data += chunk
        if len(data) >= size:
            return bytes(data)


async def _assert_round_trip(
    server: trio.abc.Stream, client: trio.abc.Stream, payload: bytes = PAYLOAD
) -> None:
    await client.send_all(payload)
    assert await _receive_exactly(server, len(payload)) == payload
    await server.send_all(payload[::-1])
    assert await _receive_exactly(client, len(payload)) == payload[::-1]


def _dev_server_context() -> ssl.SSLContext:
    return tls.server_context(*tls.dev_cert_paths())


def _issue(
    ca: trustme.CA, directory: Path, *hosts: str, name: str = "leaf"
) -> tuple[Path, Path]:
    """A leaf for `hosts` written as (cert chain, key), key mode 0600."""
    leaf = ca.issue_cert(*hosts)
    cert = directory / f"{name}.pem"
    key = directory / f"{name}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    key.chmod(0o600)
    return cert, key


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def leaf_files(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path]:
    return _issue(ca, tmp_path, "localhost")


# --- server_context errors ---------------------------------------------------


def _config_error(certfile: Path, keyfile: Path) -> str:
    with pytest.raises(tls.TLSConfigError) as info:
        tls.server_context(certfile, keyfile)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_cert_file_is_named(leaf_files: tuple[Path, Path]) -> None:
    _, key = leaf_files
    missing = key.parent / "nope.pem"
    message = _config_error(missing, key)
    assert str(missing) in message
    assert "not found" in message


def test_missing_key_file_is_named(leaf_files: tuple[Path, Path]) -> None:
    cert, _ = leaf_files
    missing = cert.parent / "nope.key"
    message = _config_error(cert, missing)
    assert str(missing) in message
    assert "not found" in message


def test_directory_instead_of_file(
    leaf_files: tuple[Path, Path], tmp_path: Path
) -> None:
    _, key = leaf_files
    message = _config_error(tmp_path, key)
    assert f"cannot read TLS certificate file {tmp_path}" in message


def test_garbage_cert_is_named(leaf_files: tuple[Path, Path], tmp_path: Path) -> None:
    _, key = leaf_files
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a certificate\n")
    message = _config_error(garbage, key)
    assert f"TLS certificate file {garbage}" in message


def test_corrupt_pem_cert_is_named(
    leaf_files: tuple[Path, Path], tmp_path: Path
) -> None:
    _, key = leaf_files
    corrupt = tmp_path / "corrupt.pem"
    corrupt.write_bytes(
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    message = _config_error(corrupt, key)
    assert f"TLS certificate file {corrupt}" in message


def test_garbage_key_is_named(leaf_files: tuple[Path, Path], tmp_path: Path) -> None:
    cert, _ = leaf_files
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"not a key\n")
    message = _config_error(cert, garbage)
    assert f"TLS key file {garbage}" in message


def test_certificate_given_as_key_is_named(leaf_files: tuple[Path, Path]) -> None:
    cert, _ = leaf_files
    message = _config_error(cert, cert)
    assert f"TLS key file {cert}" in message


def test_mismatched_key_is_named(ca: trustme.CA, tmp_path: Path) -> None:
    cert, _ = _issue(ca, tmp_path, "localhost")
    other = tmp_path / "other.key"
    other.write_bytes(ca.issue_cert("localhost").private_key_pem.bytes())
    message = _config_error(cert, other)
    assert str(other) in message
    assert "does not match" in message


def test_encrypted_key_is_refused_without_prompting(
    leaf_files: tuple[Path, Path], tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization

    cert, key = leaf_files
    private_key = serialization.load_pem_private_key(key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    message = _config_error(cert, encrypted)
    assert str(encrypted) in message
    assert "encrypted" in message


# --- context settings --------------------------------------------------------


def test_server_context_settings(leaf_files: tuple[Path, Path]) -> None:
    context = tls.server_context(*leaf_files)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_RENEGOTIATION


@pytest.mark.parametrize("use_dev_ca", [False, True])
def test_client_context_verifies(use_dev_ca: bool) -> None:
    context = tls.client_context(tls.dev_ca_path() if use_dev_ca else None)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_RENEGOTIATION


def test_client_context_bad_cafile(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(tls.TLSConfigError, match="not found") as info:
        tls.client_context(missing)
    assert str(missing) in str(info.value)

    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"nothing to see\n")
    with pytest.raises(tls.TLSConfigError, match="valid PEM certificate") as info:
        tls.client_context(garbage)
    assert str(garbage) in str(info.value)


# --- mutual TLS ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MutualFiles:
    """A server's CA and certificate, a client CA, and client certificates."""

    server_ca: Path
    server: tuple[Path, Path]
    client_ca: Path
    client: tuple[Path, Path]  # issued by client_ca
    stranger: tuple[Path, Path]  # issued by another CA


@pytest.fixture
def mutual(ca: trustme.CA, tmp_path: Path) -> MutualFiles:
    server_ca = tmp_path / "server-ca.pem"
    ca.cert_pem.write_to_path(str(server_ca))
    client_ca = trustme.CA()
    client_ca_file = tmp_path / "client-ca.pem"
    client_ca.cert_pem.write_to_path(str(client_ca_file))
    return MutualFiles(
        server_ca=server_ca,
        server=_issue(ca, tmp_path, "localhost", name="server"),
        client_ca=client_ca_file,
        client=_issue(client_ca, tmp_path, "alice.example", name="alice"),
        stranger=_issue(trustme.CA(), tmp_path, "mallory.example", name="mallory"),
    )


def _client_ctx(
    files: MutualFiles, client: tuple[Path, Path] | None, version: ssl.TLSVersion
) -> ssl.SSLContext:
    certfile, keyfile = client if client is not None else (None, None)
    context = tls.client_context(files.server_ca, certfile=certfile, keyfile=keyfile)
    context.maximum_version = version
    return context


#: The client certificate arrives at a different point of each handshake:
#: in TLS 1.3 the client has finished before the server has checked it.
TLS_VERSIONS = pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["1.2", "1.3"]
)


@TLS_VERSIONS
async def test_client_certificate_from_the_client_ca_is_accepted(
    mutual: MutualFiles, version: ssl.TLSVersion
) -> None:
    server_ctx = tls.server_context(*mutual.server, client_ca=mutual.client_ca)
    client_ctx = _client_ctx(mutual, mutual.client, version)
    server, client = await _handshake(server_ctx, client_ctx, "localhost")
    await _assert_round_trip(server, client)
    assert isinstance(server, trio.SSLStream)
    peer = server.getpeercert()
    assert peer is not None
    assert peer["subjectAltName"] == (("DNS", "alice.example"),)


@TLS_VERSIONS
@pytest.mark.parametrize(
    ("who", "server_reason"),
    [
        ("none", "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
        ("stranger", "CERTIFICATE_VERIFY_FAILED"),
    ],
)
async def test_client_without_a_certificate_from_the_client_ca_is_refused(
    mutual: MutualFiles, version: ssl.TLSVersion, who: str, server_reason: str
) -> None:
    server_ctx = tls.server_context(*mutual.server, client_ca=mutual.client_ca)
    client_ctx = _client_ctx(
        mutual, mutual.stranger if who == "stranger" else None, version
    )
    server_transport, client_transport = trio.testing.memory_stream_pair()
    server = trio.SSLStream(server_transport, server_ctx, server_side=True)
    client = trio.SSLStream(client_transport, client_ctx, server_hostname="localhost")
    received: list[bytes | bytearray] = []

    async def serve() -> None:
        with pytest.raises(trio.BrokenResourceError) as failure:
            await server.do_handshake()
            received.append(await server.receive_some())  # never reached
        cause = failure.value.__cause__
        assert isinstance(cause, ssl.SSLError)
        assert cause.reason == server_reason
        await trio.aclose_forcefully(server_transport)  # as the chat server does

    with trio.fail_after(HANDSHAKE_DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            # TLS 1.2 fails in the handshake; with 1.3 the client's handshake
            # "succeeds" and the refusal shows on its first read. Either way
            # it cannot exchange data.
            with pytest.raises(trio.BrokenResourceError):
                await client.do_handshake()
                await client.send_all(PAYLOAD)
                await client.receive_some()
    assert received == []


def test_client_ca_settings(mutual: MutualFiles) -> None:
    open_ctx = tls.server_context(*mutual.server)
    assert open_ctx.verify_mode == ssl.CERT_NONE  # no client certificate asked
    context = tls.server_context(*mutual.server, client_ca=mutual.client_ca)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_RENEGOTIATION
    # Only the client CA vouches for clients, never the system's store.
    assert len(context.get_ca_certs()) == 1


async def test_a_client_certificate_is_harmless_when_not_asked_for(
    mutual: MutualFiles,
) -> None:
    server_ctx = tls.server_context(*mutual.server)
    client_ctx = _client_ctx(mutual, mutual.client, ssl.TLSVersion.TLSv1_3)
    server, client = await _handshake(server_ctx, client_ctx, "localhost")
    await _assert_round_trip(server, client)


def _client_config_error(
    cafile: Path | None = None,
    *,
    certfile: Path | None = None,
    keyfile: Path | None = None,
) -> str:
    with pytest.raises(tls.TLSConfigError) as info:
        tls.client_context(cafile, certfile=certfile, keyfile=keyfile)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_client_certificate_errors_name_the_file(
    mutual: MutualFiles, tmp_path: Path
) -> None:
    cert, key = mutual.client
    missing = tmp_path / "missing.pem"
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not PEM at all\n")
    _, other_key = mutual.stranger

    message = _client_config_error(certfile=missing, keyfile=key)
    assert message == f"TLS client certificate file not found: {missing}"
    message = _client_config_error(certfile=cert, keyfile=missing)
    assert message == f"TLS client key file not found: {missing}"
    message = _client_config_error(certfile=garbage, keyfile=key)
    assert message == (
        f"TLS client certificate file {garbage} does not hold a valid PEM certificate"
    )
    message = _client_config_error(certfile=cert, keyfile=garbage)
    assert message == f"TLS client key file {garbage} does not hold a PEM private key"
    message = _client_config_error(certfile=cert, keyfile=other_key)
    assert message == (
        f"TLS client key file {other_key} does not match the certificate in {cert}"
    )


def test_client_certificate_needs_its_key_and_the_key_its_certificate(
    mutual: MutualFiles,
) -> None:
    cert, key = mutual.client
    assert _client_config_error(certfile=cert) == (
        "a TLS client certificate file needs its key file too"
    )
    assert _client_config_error(keyfile=key) == (
        "a TLS client key file needs its certificate file too"
    )


@pytest.mark.parametrize("content", [None, b"garbage\n"], ids=["missing", "garbage"])
def test_bad_client_ca_is_named(
    mutual: MutualFiles, tmp_path: Path, content: bytes | None
) -> None:
    client_ca = tmp_path / "bad-ca.pem"
    if content is not None:
        client_ca.write_bytes(content)
    with pytest.raises(tls.TLSConfigError) as info:
        tls.server_context(*mutual.server, client_ca=client_ca)
    message = str(info.value)
    assert message.startswith("client CA file ")
    assert str(client_ca) in message
    assert "\n" not in message


def test_from_args_passes_the_client_ca_on(mutual: MutualFiles) -> None:
    cert, key = mutual.server
    client_ca = str(mutual.client_ca)
    explicit = tls.server_context_from_args(str(cert), str(key), client_ca)
    assert explicit.verify_mode == ssl.CERT_REQUIRED
    # The development certificate with a real client CA is fine too.
    dev = tls.server_context_from_args(None, None, client_ca)
    assert dev.verify_mode == ssl.CERT_REQUIRED
    assert tls.server_context_from_args(None, None).verify_mode == ssl.CERT_NONE


# --- permission warning ------------------------------------------------------


@posix_only
def test_exposed_operator_key_warns(
    leaf_files: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = leaf_files
    key.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="trio_chat.tls"):
        tls.server_context(cert, key)
    assert any(
        "readable by other users" in r.getMessage() and str(key) in r.getMessage()
        for r in caplog.records
    )


@posix_only
def test_private_operator_key_does_not_warn(
    leaf_files: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="trio_chat.tls"):
        tls.server_context(*leaf_files)
    assert caplog.records == []


# --- server_context_from_args ------------------------------------------------


@pytest.mark.parametrize(
    ("cert", "key", "complaint"),
    [("server.pem", None, "--cert needs --key"), (None, "k.key", "--key needs --cert")],
)
def test_from_args_needs_both_flags(
    cert: str | None, key: str | None, complaint: str
) -> None:
    with pytest.raises(tls.TLSConfigError, match=complaint):
        tls.server_context_from_args(cert, key)


def test_from_args_both_flags(leaf_files: tuple[Path, Path]) -> None:
    cert, key = leaf_files
    context = tls.server_context_from_args(str(cert), str(key))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_from_args_defaults_to_dev_cert_with_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="trio_chat.tls"):
        tls.server_context_from_args(None, None)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages  # the dev warning, no permission warning
    assert "development certificate" in messages[0]
    assert "testing only" in messages[0]


@posix_only
def test_dev_key_is_not_flagged_even_if_world_readable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A clone checks the key out 0644; that must not nag.
    _, key = tls.dev_cert_paths()
    assert os.stat(key).st_mode & 0o044, "the committed dev key should be 0644"
    with caplog.at_level(logging.WARNING, logger="trio_chat.tls"):
        tls.server_context_from_args(None, None)
    assert not any("readable by other users" in r.getMessage() for r in caplog.records)


def test_dev_files_found_in_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_pem, _ca_key, cert, key = certs.generate(tmp_path / "certs", ["localhost"])
    monkeypatch.setattr(tls, "_PACKAGE_CERTS_DIR", tmp_path / "absent")
    monkeypatch.chdir(tmp_path)
    assert tls.dev_ca_path() == ca_pem
    assert tls.dev_cert_paths() == (cert, key)


def test_no_dev_files_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tls, "_PACKAGE_CERTS_DIR", tmp_path / "absent")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(tls.TLSConfigError, match="gen-certs") as info:
        tls.server_context_from_args(None, None)
    assert "\n" not in str(info.value)
    with pytest.raises(tls.TLSConfigError):
        tls.dev_ca_path()


# --- the committed development certificate ----------------------------------


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", "::1"])
async def test_dev_cert_handshake_and_round_trip(hostname: str) -> None:
    client_ctx = tls.client_context(cafile=tls.dev_ca_path())
    server, client = await _handshake(_dev_server_context(), client_ctx, hostname)
    await _assert_round_trip(server, client)


async def test_system_trust_store_rejects_dev_cert() -> None:
    error = await _failed_client_handshake(
        _dev_server_context(), tls.client_context(), "localhost"
    )
    assert error.verify_code != 0


async def test_wrong_hostname_rejected() -> None:
    client_ctx = tls.client_context(cafile=tls.dev_ca_path())
    error = await _failed_client_handshake(
        _dev_server_context(), client_ctx, "chat.example"
    )
    assert "mismatch" in error.verify_message.lower()


async def test_other_ca_rejected(ca: trustme.CA, tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.pem"
    ca.cert_pem.write_to_path(str(other_ca))
    error = await _failed_client_handshake(
        _dev_server_context(), tls.client_context(cafile=other_ca), "localhost"
    )
    assert error.verify_code != 0


def test_dev_cert_valid_for_another_year() -> None:
    cert_path, _ = tls.dev_cert_paths()
    deadline = datetime.datetime.now(datetime.UTC) + MIN_REMAINING_VALIDITY
    for path in (cert_path, tls.dev_ca_path()):
        for cert in x509.load_pem_x509_certificates(path.read_bytes()):
            assert cert.not_valid_after_utc > deadline, f"{path} expires soon"
            assert cert.not_valid_before_utc < datetime.datetime.now(datetime.UTC)


def test_dev_cert_names() -> None:
    cert_path, _ = tls.dev_cert_paths()
    leaf = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    names += [str(n) for n in san.get_values_for_type(x509.IPAddress)]
    assert sorted(names) == sorted(certs.DEFAULT_HOSTS)


# --- generate() --------------------------------------------------------------


async def test_generated_certs_handshake(tmp_path: Path) -> None:
    ca_pem, ca_key, cert, key = certs.generate(tmp_path / "lan", ["chat.lan"])
    assert [p.name for p in (ca_pem, ca_key, cert, key)] == [
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
    ]
    server, client = await _handshake(
        tls.server_context(cert, key), tls.client_context(cafile=ca_pem), "chat.lan"
    )
    await _assert_round_trip(server, client)


@posix_only
def test_generated_keys_are_private(tmp_path: Path) -> None:
    _, ca_key, _, key = certs.generate(tmp_path, ["chat.lan"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca_key.stat().st_mode) == 0o600


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    first = certs.generate(tmp_path, ["chat.lan"])
    before = [path.read_bytes() for path in first]
    with pytest.raises(certs.CertsUnavailable, match="will not overwrite") as info:
        certs.generate(tmp_path, ["chat.lan"])
    assert isinstance(info.value, FileExistsError)
    assert "\n" not in str(info.value)
    assert [path.read_bytes() for path in first] == before


def test_generate_refuses_if_any_file_exists(tmp_path: Path) -> None:
    (tmp_path / "server.key").write_bytes(b"precious")
    with pytest.raises(certs.CertsExist, match=r"server\.key"):
        certs.generate(tmp_path, ["chat.lan"])
    assert (tmp_path / "server.key").read_bytes() == b"precious"
    assert not (tmp_path / "ca.pem").exists()


@posix_only
def test_generate_overwrite_replaces_and_keeps_key_private(tmp_path: Path) -> None:
    first = certs.generate(tmp_path, ["chat.lan"])
    old = [path.read_bytes() for path in first]
    first[3].chmod(0o644)
    second = certs.generate(tmp_path, ["chat.lan"], overwrite=True)
    assert second == first
    assert all(
        path.read_bytes() != data for path, data in zip(second, old, strict=True)
    )
    assert stat.S_IMODE(second[3].stat().st_mode) == 0o600


def test_generate_validity(tmp_path: Path) -> None:
    _, _, cert, _ = certs.generate(tmp_path, ["chat.lan"], valid_days=30)
    leaf = x509.load_pem_x509_certificates(cert.read_bytes())[0]
    remaining = leaf.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=29) < remaining <= datetime.timedelta(days=30)


@pytest.mark.parametrize("hosts", [[], ["not a host"]])
def test_generate_bad_hosts(tmp_path: Path, hosts: list[str]) -> None:
    with pytest.raises(certs.CertsUnavailable):
        certs.generate(tmp_path, hosts)
    assert list(tmp_path.iterdir()) == []


def test_generate_without_trustme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "trustme", None)  # import raises ImportError
    with pytest.raises(certs.CertsUnavailable) as info:
        certs.generate(tmp_path, ["chat.lan"])
    # What installs it from a registry, and from a clone: not 'trio-chat[certs]',
    # which no registry has.
    assert str(info.value) == (
        "gen-certs needs trustme: python -m pip install trustme"
        " (or, in a clone of trio-chat, python -m pip install '.[certs]')"
    )


# --- the CLI -----------------------------------------------------------------


def test_cli_gen_certs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "x"
    assert cli.main(["gen-certs", str(target), "--host", "chat.lan"]) == 0
    names = sorted(path.name for path in target.iterdir())
    assert names == ["ca.key", "ca.pem", "server.key", "server.pem"]
    assert capsys.readouterr().out.split() == [
        str(target / name) for name in ("ca.pem", "ca.key", "server.pem", "server.key")
    ]
    leaf = x509.load_pem_x509_certificates((target / "server.pem").read_bytes())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["chat.lan"]


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--cert", "c.pem", "--key", "c.key"], "--cert needs --tls"),
        (["--key", "c.key"], "--key needs --tls"),
        (["--tls", "--cert", "c.pem"], "--cert needs --key too"),
        (["--tls", "--key", "c.key"], "--key needs --cert too"),
    ],
)
def test_cli_client_certificate_flags(
    flags: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["client", "--name", "x", *flags]) == 2
    assert capsys.readouterr().err == f"trio-chat: {complaint}\n"


def test_cli_client_certificate_file_errors_are_one_line(
    mutual: MutualFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, key = mutual.client
    missing = tmp_path / "missing.pem"
    argv = ["client", "--tls", "--cert", str(missing), "--key", str(key)]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        f"trio-chat: TLS client certificate file not found: {missing}\n"
    )


def test_cli_gen_certs_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["gen-certs", str(tmp_path)]) == 0
    capsys.readouterr()
    assert cli.main(["gen-certs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trio-chat: will not overwrite")
    assert err.count("\n") == 1


async def test_gen_certs_issues_client_certificates_from_its_kept_ca(
    tmp_path: Path,
) -> None:
    lan = tmp_path / "lan"
    assert cli.main(["gen-certs", str(lan), "--host", "chat.lan"]) == 0
    # Later, the same directory issues client certificates from its CA.
    assert cli.main(["gen-certs", str(lan), "--client", "alice"]) == 0
    assert cli.main(["gen-certs", str(lan), "--client", "bob_1"]) == 0  # no DNS name
    server_ctx = tls.server_context(
        lan / "server.pem", lan / "server.key", client_ca=lan / "ca.pem"
    )
    for name in ("alice", "bob_1"):
        if os.name == "posix":
            assert stat.S_IMODE((lan / f"{name}.key").stat().st_mode) == 0o600
        client_ctx = tls.client_context(
            lan / "ca.pem", certfile=lan / f"{name}.pem", keyfile=lan / f"{name}.key"
        )
        server, client = await _handshake(server_ctx, client_ctx, "chat.lan")
        await _assert_round_trip(server, client)
        assert isinstance(server, trio.SSLStream)
        assert server.getpeercert(binary_form=True)
    # A client from another CA is not let in.
    other = tmp_path / "other"
    certs.generate(other, None, clients=["eve"])
    eve = tls.client_context(
        lan / "ca.pem", certfile=other / "eve.pem", keyfile=other / "eve.key"
    )
    refused = False
    try:
        await _handshake(server_ctx, eve, "chat.lan")
    except* trio.BrokenResourceError:
        refused = True
    assert refused


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--client", "../x"], "not a valid name for a client: '../x'"),
        ([], "has a CA already; --client NAME issues client certificates"),
    ],
)
def test_gen_certs_refusals(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    complaint: str,
) -> None:
    assert cli.main(["gen-certs", str(tmp_path)]) == 0
    before = sorted(tmp_path.iterdir())
    capsys.readouterr()
    assert cli.main(["gen-certs", str(tmp_path), *argv]) == 2
    assert complaint in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == before


def test_a_ca_without_its_key_cannot_issue_client_certificates(
    tmp_path: Path,
) -> None:
    _, ca_key, *_ = certs.generate(tmp_path, None)
    ca_key.unlink()  # a directory from before the key was kept
    with pytest.raises(certs.CertsUnavailable, match=r"has no key beside it"):
        certs.generate(tmp_path, None, clients=["alice"])


async def test_a_tls_error_after_data_is_raised_by_the_next_receive() -> None:
    """OpenSSL reports an error once: met after a record was read, it must
    not turn into a clean end of stream at the next receive."""

    bad_mac = ssl.SSLError(1, "[SSL: BAD_RECORD_MAC] bad record mac")
    bad_mac.reason = "BAD_RECORD_MAC"  # as OpenSSL's own errors have it

    class Records:
        def __init__(self) -> None:
            self.answers: list[bytes | Exception] = [b"one\n", bad_mac, b""]

        def recv(self, size: int) -> bytes:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    transport = SocketTLSTransport.__new__(SocketTLSTransport)
    transport.sock = Records()  # type: ignore[assignment]
    transport._retry = 0
    transport._error = None
    transport._drained = False
    assert await transport.receive() == b"one\n"
    with pytest.raises(TransportError, match="TLS error"):
        await transport.receive()
