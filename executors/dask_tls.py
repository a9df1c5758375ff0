"""TLS credentials for Dask: a cluster accepts only the clients and workers that hold them.

A plain Dask cluster runs the code of anyone who can connect to its scheduler, and on one
machine that is every local user. So the ``LocalCluster`` a run starts speaks TLS with
mutual authentication (Dask's ``Security``): a self-signed certificate made for that cluster
serves as its authority, and the scheduler, its workers and its clients all present it. The
certificate and its key are written to a fresh folder only the current user can read (mode
0700, files 0600), which is removed when the cluster closes. Another run (or a
``distributed.Client``) joins by loading that folder::

    PIPELINES_DASK_TLS=/tmp/pipelines-dask-tls-abc123 python -m pipelines run ingest \\
        --executor dask --address tls://127.0.0.1:36861

A cluster of your own (``dask scheduler``, ``dask worker``) can use the same kind of folder::

    python -m executors.dask_tls ./dask-tls      # writes ca.pem, cert.pem, key.pem
    dask scheduler --host 127.0.0.1 --protocol tls --tls-ca-file ./dask-tls/ca.pem \\
        --tls-cert ./dask-tls/cert.pem --tls-key ./dask-tls/key.pem
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ClusterUnreachableError

if TYPE_CHECKING:
    from distributed.security import Security

ENV = "PIPELINES_DASK_TLS"  # the folder of credentials a run uses to join a cluster
CA, CERT, KEY = "ca.pem", "cert.pem", "key.pem"


def create(directory: str | os.PathLike[str] | None = None) -> Path:
    """Write new credentials (``ca.pem``, ``cert.pem``, ``key.pem``) to a private folder.

    Args:
        directory: where; made with mode 0700 if missing. Default: a new temporary folder.

    Returns:
        The folder.
    """
    from distributed.security import Security

    if directory is None:
        folder = Path(tempfile.mkdtemp(prefix="pipelines-dask-tls-"))  # mode 0700
    else:
        folder = Path(directory)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
    made = Security.temporary()  # one self-signed certificate: its own authority
    for name, text in ((CA, made.tls_ca_file), (CERT, made.tls_client_cert), (KEY, made.tls_client_key)):
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    return folder


def load(directory: str | os.PathLike[str]) -> Security:
    """Dask ``Security`` that requires TLS and presents the credentials in ``directory``, in every role.

    Raises:
        ClusterUnreachableError: a file is missing or unreadable, naming it.
    """
    from distributed.security import Security

    folder = Path(directory)
    paths = {name: folder / name for name in (CA, CERT, KEY)}
    for path in paths.values():
        if not os.access(path, os.R_OK):
            raise ClusterUnreachableError(
                f"Dask TLS credentials: cannot read {path} (a folder with {CA}, {CERT} "
                f"and {KEY} is needed, as a run started with --keep-cluster prints)"
            )
    ca, cert, key = (str(paths[n]) for n in (CA, CERT, KEY))
    return Security(
        require_encryption=True,
        tls_ca_file=ca,
        tls_client_cert=cert,
        tls_client_key=key,
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
    )


def for_joining(address: str, directory: str | os.PathLike[str] | None = None) -> Security | None:
    """The security to join the scheduler at ``address`` with.

    The credentials folder given (the runner passes ``$PIPELINES_DASK_TLS``); without one, a
    ``tls://`` address uses Dask's own configuration (``distributed.comm.tls.*``), and a
    ``tcp://`` one none.

    Raises:
        ClusterUnreachableError: a ``tls://`` address and no credentials anywhere.
    """
    if directory:
        return load(directory)
    if not address.startswith("tls://"):
        return None
    from distributed.security import Security

    configured = Security()
    if not getattr(configured, "tls_ca_file", None):  # set from Dask's configuration, if at all
        raise ClusterUnreachableError(
            f"the Dask scheduler at {address} speaks TLS: give its credentials with {ENV}=FOLDER (the folder a "
            f"run started with --keep-cluster prints, or one made by `python -m executors.dask_tls FOLDER`), or "
            f"set Dask's distributed.comm.tls options"
        )
    return configured


def remove(directory: str | os.PathLike[str]) -> None:
    """Delete a credentials folder made by ``create()``."""
    shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m executors.dask_tls FOLDER``: write credentials for a cluster of your own."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m executors.dask_tls FOLDER", file=sys.stderr)
        return 2
    folder = create(args[0])
    ca, cert, key = (folder / n for n in (CA, CERT, KEY))
    tls = f"--tls-ca-file {ca} --tls-cert {cert} --tls-key {key}"
    print(
        f"wrote {ca}, {cert} and {key} (readable by you only)\n"
        f"dask scheduler --host 127.0.0.1 --protocol tls {tls}\n"
        f"dask worker tls://127.0.0.1:8786 --host 127.0.0.1 {tls}\n"
        f"{ENV}={folder} python -m pipelines run NAME --executor dask --address tls://127.0.0.1:8786"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
