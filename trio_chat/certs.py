"""`trio-chat gen-certs`: a local CA, server and client certificates (a LAN, tests).

Needs the optional `trustme` package (the ``certs`` extra), imported only when
certificates are generated. The CA's private key is kept beside its
certificate (`ca.key`, mode 0600), so the same directory issues client
certificates later, for a server that requires them (`serve --client-ca
DIR/ca.pem`): whoever holds that key can make certificates the server and
its clients trust, so it stays private, like the server's own key.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from trio_chat.names import InvalidName, validate_name

#: What a development server answers to: the loopback name and addresses.
DEFAULT_HOSTS: Final = ("localhost", "127.0.0.1", "::1")
#: Long enough that the committed development certificate outlives the
#: project's interest in it; these are not internet certificates, where the
#: limit is 398 days.
VALID_DAYS: Final = 3650

CA_FILENAME: Final = "ca.pem"
CA_KEY_FILENAME: Final = "ca.key"
CERT_FILENAME: Final = "server.pem"
KEY_FILENAME: Final = "server.key"
#: The private key is for the server's user alone.
KEY_MODE: Final = 0o600
#: Certificates are public; the process umask still applies.
PUBLIC_MODE: Final = 0o644

_CA_ORGANIZATION: Final = "trio-chat development CA"
_CERT_ORGANIZATION: Final = "trio-chat development server"
_CLIENT_ORGANIZATION: Final = "trio-chat client"
#: What a client certificate is for when its name cannot be a DNS name
#: (`bob_1`): the server goes by the certificate's fingerprint, not by this.
_CLIENT_FALLBACK_IDENTITY: Final = "client.invalid"


class CertsUnavailable(Exception):
    """Certificates cannot be generated; str() is one line for a user."""


class CertsExist(CertsUnavailable, FileExistsError):
    """A file `generate` would write exists and overwriting was not asked for."""


def _write(path: Path, data: bytes, *, mode: int, overwrite: bool) -> None:
    # O_EXCL: a file that appeared since the existence check is not clobbered.
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags | getattr(os, "O_BINARY", 0), mode)
    with open(fd, "wb") as file:
        file.write(data)
    if mode == KEY_MODE:
        # The mode given to os.open applies only to a new file.
        os.chmod(path, KEY_MODE)


def generate(
    directory: str | os.PathLike[str],
    hosts: Sequence[str] | None,
    *,
    clients: Sequence[str] = (),
    overwrite: bool = False,
    valid_days: int = VALID_DAYS,
) -> list[Path]:
    """Write certificates into `directory` (made if needed); return their paths.

    Without a CA there yet (`ca.pem` and `ca.key`), a new CA is made and
    written, and a server certificate for `hosts` (DNS names or IP
    addresses; None: `DEFAULT_HOSTS`): `server.pem`, its chain, and
    `server.key`. With a CA there already, it issues what is asked: a
    server certificate only if `hosts` is given. Each name of `clients`
    gets a client certificate, `NAME.pem` and `NAME.key`, from the same CA
    (a server trusting `ca.pem` as `--client-ca` lets them in). Keys are
    mode 0600. Paths come in that order: ca.pem, ca.key, server.pem,
    server.key, then each client's .pem and .key.

    Raises CertsExist (a CertsUnavailable and a FileExistsError) if a file
    to write exists and `overwrite` is false, writing nothing; and
    CertsUnavailable if trustme is not installed, there is nothing to do,
    `hosts` is empty or not usable in a certificate, a client name is not a
    valid name, the CA there cannot be read, or a file cannot be written.
    """
    try:
        import trustme
    except ImportError:
        raise CertsUnavailable(
            "gen-certs needs trustme: python -m pip install trustme"
            " (or, in a clone of trio-chat, python -m pip install '.[certs]')"
        ) from None
    if isinstance(hosts, str) or isinstance(clients, str):
        raise TypeError("hosts and clients must be sequences of names, not strings")
    if hosts is not None and not hosts:
        raise CertsUnavailable("gen-certs needs at least one host name or address")
    target = Path(directory)
    ca_paths = (target / CA_FILENAME, target / CA_KEY_FILENAME)
    existing_ca = ca_paths[0].exists() and ca_paths[1].exists() and not overwrite
    if existing_ca and hosts is None and not clients:
        raise CertsExist(
            f"will not overwrite {ca_paths[0]}: {target} has a CA already;"
            " --client NAME issues client certificates from it, --host a server"
            " certificate"
        )
    if not existing_ca and hosts is None:
        hosts = list(DEFAULT_HOSTS)
    names = [_client_name(name) for name in clients]

    not_after = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
        days=valid_days
    )
    files: list[tuple[Path, bytes, int]] = []
    if existing_ca:
        try:
            ca = trustme.CA.from_pem(ca_paths[0].read_bytes(), ca_paths[1].read_bytes())
        except OSError as exc:
            raise CertsUnavailable(
                f"cannot read the CA in {target}: {exc.strerror or exc}"
            ) from None
        except ValueError as exc:
            raise CertsUnavailable(f"cannot use the CA in {target}: {exc}") from None
    else:
        if ca_paths[0].exists() and not ca_paths[1].exists() and clients:
            raise CertsUnavailable(
                f"{ca_paths[0]} has no key beside it ({ca_paths[1]}), so it"
                " cannot issue client certificates: make a new directory"
            )
        ca = trustme.CA(organization_name=_CA_ORGANIZATION)
        files += [
            (ca_paths[0], ca.cert_pem.bytes(), PUBLIC_MODE),
            (ca_paths[1], ca.private_key_pem.bytes(), KEY_MODE),
        ]
    if hosts is not None:
        try:
            leaf = ca.issue_cert(
                *hosts, organization_name=_CERT_ORGANIZATION, not_after=not_after
            )
        except (ValueError, UnicodeError) as exc:
            raise CertsUnavailable(
                f"cannot issue a certificate for {', '.join(map(repr, hosts))}: {exc}"
            ) from None
        files += [
            (
                target / CERT_FILENAME,
                b"".join(blob.bytes() for blob in leaf.cert_chain_pems),
                PUBLIC_MODE,
            ),
            (target / KEY_FILENAME, leaf.private_key_pem.bytes(), KEY_MODE),
        ]
    for name in names:
        try:
            client = ca.issue_cert(
                name,
                common_name=name,
                organization_name=_CLIENT_ORGANIZATION,
                not_after=not_after,
            )
        except (ValueError, UnicodeError):  # not a DNS name: no matter
            client = ca.issue_cert(
                _CLIENT_FALLBACK_IDENTITY,
                common_name=name,
                organization_name=_CLIENT_ORGANIZATION,
                not_after=not_after,
            )
        files += [
            (target / f"{name}.pem", client.cert_chain_pems[0].bytes(), PUBLIC_MODE),
            (target / f"{name}.key", client.private_key_pem.bytes(), KEY_MODE),
        ]

    if not overwrite:
        clash = [str(path) for path, _, _ in files if path.exists()]
        if clash:
            raise CertsExist(
                f"will not overwrite {', '.join(clash)}: remove them first"
            )
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CertsUnavailable(
            f"cannot create directory {target}: {exc.strerror or exc}"
        ) from None
    for path, data, mode in files:
        try:
            _write(path, data, mode=mode, overwrite=overwrite)
        except FileExistsError:
            raise CertsExist(
                f"will not overwrite {path}: it appeared while writing"
            ) from None
        except OSError as exc:
            raise CertsUnavailable(
                f"cannot write {path}: {exc.strerror or exc}"
            ) from None
    return [path for path, _, _ in files]


def _client_name(name: str) -> str:
    """`name` if it is a valid user name (and so a safe file name)."""
    try:
        return validate_name(name)
    except InvalidName as exc:
        raise CertsUnavailable(
            f"not a valid name for a client: {name!r}: {exc}"
        ) from None
