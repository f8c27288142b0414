"""The pod's service account: how a receiver running in a pod reaches the API server.

Kubernetes tells a pod where the API server is (``KUBERNETES_SERVICE_HOST`` and
``KUBERNETES_SERVICE_PORT``) and mounts the account in one directory: ``token``, ``ca.crt``
(the CA that signed the API server's certificate) and ``namespace`` (the pod's own).

The token is a projected one: the kubelet replaces it before it expires (at 80% of its
lifetime, by writing a new directory and swapping the ``..data`` symlink), and the API server
stops accepting the old one when it expires or is revoked. kubernetes_asyncio's loader re-reads
the file at most once a minute; here the file is checked before every request (one ``fstat``
of the opened file, a read only when it was replaced), so the first request after a rotation
already carries the new token. The check is a blocking call on the event loop on purpose:
the file is on a tmpfs, and a thread hop per request would cost more than the read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import structlog
from kubernetes_asyncio import config
from kubernetes_asyncio.client import Configuration

from receiver.kube.errors import KubeInvalid

__all__ = ["ServiceAccount", "ServiceAccountToken", "configure_in_cluster"]

logger = structlog.get_logger(__name__)

SERVICE_HOST = "KUBERNETES_SERVICE_HOST"


@dataclass(frozen=True)
class ServiceAccount:
    """The mounted service account directory."""

    directory: Path

    @property
    def token_file(self) -> Path:
        return self.directory / "token"

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def namespace_file(self) -> Path:
        return self.directory / "namespace"

    def namespace(self) -> str:
        """The pod's namespace, as mounted with its service account."""
        try:
            namespace = self.namespace_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise KubeInvalid(
                f"cannot read the service account's namespace file {self.namespace_file}: "
                f"{e.strerror}",
                operation="connect",
            ) from e
        if not namespace:
            raise KubeInvalid(
                f"the service account's namespace file {self.namespace_file} is empty",
                operation="connect",
            )
        return namespace


class ServiceAccountToken:
    """The bearer token in a file the kubelet replaces; always the file's current content."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._identity: tuple[int, int, int, int] | None = None
        self._token = ""
        self.current()

    def current(self) -> str:
        """The token now in the file; the last one read while the file cannot be read (the
        API server then says whether it still holds)."""
        try:
            self._read_if_replaced()
        except (OSError, ValueError) as e:
            if not self._token:
                raise KubeInvalid(
                    f"cannot read the service account token {self._path}: {_reason(e)}",
                    operation="connect",
                ) from e
            logger.warning(
                "service account token unreadable, keeping the last one", error=_reason(e)
            )
        return self._token

    def _read_if_replaced(self) -> None:
        # Open first, then fstat the open file: identity and content are of the same file
        # even when the symlink is swapped between the two calls.
        with self._path.open("rb") as f:
            st = os.fstat(f.fileno())
            identity = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            if identity == self._identity:
                return
            token = f.read().decode("utf-8").strip()
        if not token:
            raise ValueError("the file is empty")
        if self._identity is not None:
            logger.info("service account token replaced, using the new one")
        self._identity, self._token = identity, token

    def refresh(self, configuration: Configuration) -> None:
        """kubernetes_asyncio's ``refresh_api_key_hook``: called before each request."""
        configuration.api_key["BearerToken"] = f"Bearer {self.current()}"


def _reason(e: OSError | ValueError) -> str:
    if isinstance(e, OSError):
        return e.strerror or type(e).__name__
    if isinstance(e, UnicodeDecodeError):
        return "not UTF-8 text"
    return str(e)


def configure_in_cluster(configuration: Configuration, account: ServiceAccount) -> str:
    """Point ``configuration`` at the API server as the pod's service account, with a token
    re-read when it rotates; returns the pod's namespace. Raises
    :class:`~receiver.kube.errors.KubeInvalid` when not in a pod or the account is not
    mounted."""
    if not os.environ.get(SERVICE_HOST):
        raise KubeInvalid(
            f"mode in_cluster, but not running in a pod ({SERVICE_HOST} is not set)",
            operation="connect",
        )
    token = ServiceAccountToken(account.token_file)
    namespace = account.namespace()
    try:
        # The loader checks the address and the CA file; the token is ours.
        config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration,
            try_refresh_token=False,
            token_filename=str(account.token_file),
            cert_filename=str(account.ca_file),
        )
    except config.ConfigException as e:
        raise KubeInvalid(
            f"cannot use the service account in {account.directory}: {str(e)[:200]}",
            operation="connect",
        ) from e
    configuration.refresh_api_key_hook = token.refresh
    token.refresh(configuration)
    return namespace
