"""TLS contexts for the server and the client, built from PEM files.

Every context verifies what it should: the client always checks the server's
certificate and host name, and nothing here can turn that off. Mutual TLS is
optional: a server given a client CA requires every client to present a
certificate that CA issued, and a client can be given one to present.
Problems with the files become `TLSConfigError`, whose message is one line fit
to show a user. Nothing here waits or imports trio.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path
from typing import Final, TypeAlias

log = logging.getLogger(__name__)

StrPath: TypeAlias = str | os.PathLike[str]

#: TLS 1.0 and 1.1 are deprecated (RFC 8996) and every client we talk to is
#: our own, on a current Python and OpenSSL: nothing older is worth allowing.
MINIMUM_VERSION: Final = ssl.TLSVersion.TLSv1_2
#: Renegotiation (TLS 1.2 only) lets a peer make the server redo the costly
#: handshake at will and has a history of vulnerabilities; chat never needs it.
CONTEXT_OPTIONS: Final = ssl.OP_NO_RENEGOTIATION

#: Permission bits that must be clear on an operator's private key file:
#: anyone in its group or beyond who can read it can impersonate the server.
KEY_PRIVATE_BITS: Final = 0o077

#: Where the committed development certificate lives, relative to a clone.
DEV_CERTS_DIRNAME: Final = "certs"
DEV_CERT_FILENAME: Final = "server.pem"
DEV_KEY_FILENAME: Final = "server.key"
DEV_CA_FILENAME: Final = "ca.pem"
#: The `certs` directory beside the `trio_chat` package: found in a clone or an
#: editable install, absent from an installed wheel.
_PACKAGE_CERTS_DIR: Final = Path(__file__).resolve().parent.parent / DEV_CERTS_DIRNAME


class TLSConfigError(Exception):
    """A certificate, key or CA file cannot be used; str() is one line for a user."""


def _show(path: StrPath) -> str:
    """A path for a one-line message: odd characters escaped, never a newline."""
    text = os.fspath(path)
    return text if text.isprintable() else ascii(text)


def _read(path: StrPath, what: str) -> bytes:
    """The file's contents; TLSConfigError (naming the file) if it cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TLSConfigError(f"{what} not found: {_show(path)}") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TLSConfigError(f"cannot read {what} {_show(path)}: {reason}") from None


def _check_certificates(path: StrPath, what: str) -> None:
    """Raise TLSConfigError unless the file holds at least one valid PEM certificate.

    `load_cert_chain` reports a bad certificate and a bad key with the same
    "PEM lib" error; parsing the certificates on their own first tells them
    apart, so the message can name the right file.
    """
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        scratch.load_verify_locations(cafile=os.fspath(path))
    except ssl.SSLError:
        raise TLSConfigError(
            f"{what} {_show(path)} does not hold a valid PEM certificate"
        ) from None


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> bytes:
    # Called only for an encrypted key; OpenSSL would otherwise prompt on the
    # terminal for its passphrase.
    raise _EncryptedKey


def _warn_if_key_exposed(keyfile: StrPath) -> None:
    if os.name != "posix":  # pragma: no cover - permission bits mean little there
        return
    try:
        mode = os.stat(keyfile).st_mode & 0o777
    except OSError:  # gone since it was loaded: nothing left to protect
        return
    if mode & KEY_PRIVATE_BITS:
        log.warning(
            "TLS key file %s is readable by other users (mode %03o): chmod 600 it",
            _show(keyfile),
            mode,
        )


def _restrict(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = MINIMUM_VERSION
    context.options |= CONTEXT_OPTIONS
    return context


def _load_cert_chain(
    context: ssl.SSLContext,
    certfile: StrPath,
    keyfile: StrPath,
    *,
    what: str,
    check_key_permissions: bool,
) -> None:
    """Have `context` present `certfile` with `keyfile`.

    `what` names the pair in messages ("TLS" for the server's own, "TLS
    client" for a client's): "<what> certificate file", "<what> key file".
    """
    cert_what, key_what = f"{what} certificate file", f"{what} key file"
    _read(certfile, cert_what)
    key_pem = _read(keyfile, key_what)
    _check_certificates(certfile, cert_what)
    if b"PRIVATE KEY-----" not in key_pem:
        raise TLSConfigError(
            f"{key_what} {_show(keyfile)} does not hold a PEM private key"
        )
    try:
        context.load_cert_chain(certfile, keyfile, password=_no_passphrase)
    except _EncryptedKey:
        raise TLSConfigError(
            f"{key_what} {_show(keyfile)} is encrypted; give an unencrypted key"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSConfigError(
                f"{key_what} {_show(keyfile)} does not match"
                f" the certificate in {_show(certfile)}"
            ) from None
        raise TLSConfigError(
            f"{key_what} {_show(keyfile)} does not hold a valid PEM private key"
        ) from None
    except OSError as exc:  # the files changed since they were read
        raise TLSConfigError(
            f"cannot load {_show(certfile)} and {_show(keyfile)}: {exc}"
        ) from None
    if check_key_permissions:
        _warn_if_key_exposed(keyfile)


def _ca_context(purpose: ssl.Purpose, cafile: StrPath, what: str) -> ssl.SSLContext:
    """A default context for `purpose` that trusts only the CAs in `cafile`."""
    _read(cafile, what)
    _check_certificates(cafile, what)
    try:
        # With a cafile, only that file's CAs are trusted (no system store).
        return ssl.create_default_context(purpose, cafile=os.fspath(cafile))
    except OSError as exc:  # the file changed since it was checked
        raise TLSConfigError(f"cannot load {what} {_show(cafile)}: {exc}") from None


def _server_context(
    certfile: StrPath,
    keyfile: StrPath,
    *,
    client_ca: StrPath | None,
    check_key_permissions: bool,
) -> ssl.SSLContext:
    if client_ca is None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    else:
        context = _ca_context(ssl.Purpose.CLIENT_AUTH, client_ca, "client CA file")
        context.verify_mode = ssl.CERT_REQUIRED
    _load_cert_chain(
        context,
        certfile,
        keyfile,
        what="TLS",
        check_key_permissions=check_key_permissions,
    )
    return _restrict(context)


def server_context(
    certfile: StrPath, keyfile: StrPath, *, client_ca: StrPath | None = None
) -> ssl.SSLContext:
    """A server context presenting `certfile` (PEM chain) with `keyfile` (PEM key).

    TLS 1.2 at least, no renegotiation. Without `client_ca`, client
    certificates are not requested. With it (a PEM file of CAs), every client
    must present a certificate issued by one of those CAs, and only by them
    (the system store is not trusted for clients): the handshake fails
    otherwise. Logs a warning (logger ``trio_chat.tls``) if the key file can
    be read by its group or others.

    Raises TLSConfigError, naming the file, if a file is missing or unreadable,
    is not PEM, the key is encrypted or does not match the certificate.
    """
    return _server_context(
        certfile, keyfile, client_ca=client_ca, check_key_permissions=True
    )


def client_context(
    cafile: StrPath | None = None,
    *,
    certfile: StrPath | None = None,
    keyfile: StrPath | None = None,
) -> ssl.SSLContext:
    """A client context that verifies the server's certificate and host name.

    Trusts the system's CA store, or with `cafile` that PEM file's CAs instead
    (e.g. the development CA, `dev_ca_path()`). TLS 1.2 at least, no
    renegotiation, CERT_REQUIRED and check_hostname always: there is
    deliberately no way to turn verification off. With `certfile` and
    `keyfile` (both or neither), presents that client certificate to servers
    that ask for one (mutual TLS); warns, as the server does, if the key file
    can be read by others.

    Raises TLSConfigError, naming the file, if a file is missing, unreadable,
    not PEM, the key is encrypted or does not match the certificate, or if
    only one of `certfile` and `keyfile` is given.
    """
    if (certfile is None) != (keyfile is None):
        given, missing = (
            ("certificate", "key") if keyfile is None else ("key", "certificate")
        )
        raise TLSConfigError(f"a TLS client {given} file needs its {missing} file too")
    if cafile is None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:
        context = _ca_context(ssl.Purpose.SERVER_AUTH, cafile, "CA file")
    # create_default_context already does this; saying it keeps it so.
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    if certfile is not None and keyfile is not None:
        _load_cert_chain(
            context, certfile, keyfile, what="TLS client", check_key_permissions=True
        )
    return _restrict(context)


def _find_dev_files(*names: str) -> tuple[Path, ...]:
    """The named files from the first development `certs` directory holding all.

    Looks beside the package (a clone or editable install), then in ./certs.
    """
    for directory in (_PACKAGE_CERTS_DIR, Path.cwd() / DEV_CERTS_DIRNAME):
        paths = tuple(directory / name for name in names)
        if all(path.is_file() for path in paths):
            return paths
    raise TLSConfigError(
        f"no development certificate found ({', '.join(names)}): pass the files"
        " explicitly, or create them with 'trio-chat gen-certs certs'"
    )


def dev_cert_paths() -> tuple[Path, Path]:
    """(server.pem, server.key) of the committed development certificate.

    It is for localhost, 127.0.0.1 and ::1, for development and tests only:
    its private key is public. Raises TLSConfigError if it cannot be found.
    """
    cert, key = _find_dev_files(DEV_CERT_FILENAME, DEV_KEY_FILENAME)
    return cert, key


def dev_ca_path() -> Path:
    """ca.pem, the CA that issued the development certificate.

    Raises TLSConfigError if it cannot be found.
    """
    (ca,) = _find_dev_files(DEV_CA_FILENAME)
    return ca


def server_context_from_args(
    cert: str | None, key: str | None, client_ca: str | None = None
) -> ssl.SSLContext:
    """The server context for `serve --tls [--cert F --key F] [--client-ca F]`.

    Neither `cert` nor `key` given: the development certificate, with a
    logged warning that it is for testing only (and no permission check on
    its key, which is public anyway). Both given: `server_context(cert, key)`.
    `client_ca` (with either) requires client certificates issued by it.

    Raises TLSConfigError if only one of `cert` and `key` is given, or as
    `server_context` does.
    """
    if cert is None and key is None:
        dev_cert, dev_key = dev_cert_paths()
        log.warning(
            "using the development certificate %s: for testing only, its private"
            " key is public; pass --cert FILE --key FILE for real use",
            _show(dev_cert),
        )
        return _server_context(
            dev_cert, dev_key, client_ca=client_ca, check_key_permissions=False
        )
    if cert is None or key is None:
        given, missing = ("--cert", "--key") if key is None else ("--key", "--cert")
        raise TLSConfigError(f"{given} needs {missing} too")
    return server_context(cert, key, client_ca=client_ca)
