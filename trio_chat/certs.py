"""`trio-chat gen-certs`: a throwaway CA and a server certificate, for a LAN or tests.

Needs the optional `trustme` package (the ``certs`` extra), imported only when
certificates are generated. The CA's private key is never written: the CA
vouches for the one server certificate issued with it and nothing else.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

#: What a development server answers to: the loopback name and addresses.
DEFAULT_HOSTS: Final = ("localhost", "127.0.0.1", "::1")
#: Long enough that the committed development certificate outlives the
#: project's interest in it; these are not internet certificates, where the
#: limit is 398 days.
VALID_DAYS: Final = 3650

CA_FILENAME: Final = "ca.pem"
CERT_FILENAME: Final = "server.pem"
KEY_FILENAME: Final = "server.key"
#: The private key is for the server's user alone.
KEY_MODE: Final = 0o600
#: Certificates are public; the process umask still applies.
PUBLIC_MODE: Final = 0o644

_CA_ORGANIZATION: Final = "trio-chat development CA"
_CERT_ORGANIZATION: Final = "trio-chat development server"


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
    hosts: Sequence[str],
    *,
    overwrite: bool = False,
    valid_days: int = VALID_DAYS,
) -> list[Path]:
    """Write ca.pem, server.pem and server.key into `directory`; return their paths.

    A new CA issues a server certificate for `hosts` (DNS names or IP
    addresses), valid for `valid_days`. `ca.pem` is the CA certificate for
    clients to trust, `server.pem` the server's certificate chain and
    `server.key` its private key, mode 0600. The directory is created if
    needed.

    Raises CertsExist (a CertsUnavailable and a FileExistsError) if any of the
    three files exists and `overwrite` is false, writing nothing; and
    CertsUnavailable if trustme is not installed, `hosts` is empty or not
    usable in a certificate, or a file cannot be written.
    """
    try:
        import trustme
    except ImportError:
        raise CertsUnavailable(
            "gen-certs needs trustme: pip install 'trio-chat[certs]'"
        ) from None
    if isinstance(hosts, str):
        raise TypeError("hosts must be a sequence of names, not one string")
    if not hosts:
        raise CertsUnavailable("gen-certs needs at least one host name or address")
    target = Path(directory)
    paths = [target / CA_FILENAME, target / CERT_FILENAME, target / KEY_FILENAME]
    if not overwrite:
        existing = [str(path) for path in paths if path.exists()]
        if existing:
            raise CertsExist(
                f"will not overwrite {', '.join(existing)}: remove them first"
            )

    ca = trustme.CA(organization_name=_CA_ORGANIZATION)
    not_after = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
        days=valid_days
    )
    try:
        leaf = ca.issue_cert(
            *hosts, organization_name=_CERT_ORGANIZATION, not_after=not_after
        )
    except (ValueError, UnicodeError) as exc:
        raise CertsUnavailable(
            f"cannot issue a certificate for {', '.join(map(repr, hosts))}: {exc}"
        ) from None
    contents = [
        (ca.cert_pem.bytes(), PUBLIC_MODE),
        (b"".join(blob.bytes() for blob in leaf.cert_chain_pems), PUBLIC_MODE),
        (leaf.private_key_pem.bytes(), KEY_MODE),
    ]

    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CertsUnavailable(
            f"cannot create directory {target}: {exc.strerror or exc}"
        ) from None
    for path, (data, mode) in zip(paths, contents, strict=True):
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
    return paths
