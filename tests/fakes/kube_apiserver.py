"""The API server as a pod sees it: HTTPS signed by the cluster's CA, bearer tokens checked.

:class:`APIServerFront` is a TLS front for the Kubernetes emulator (which serves plain HTTP
and ignores credentials). Like a real API server it presents a certificate for its address
signed by the cluster CA, accepts only the tokens it currently honours and answers anything
else with 401 and a ``Status``; accepted requests are forwarded to the emulator unchanged.

:class:`ProjectedServiceAccount` writes the service account directory the way the kubelet's
atomic writer does: the files live in a timestamped directory, ``..data`` links to it and
``token``, ``ca.crt``, ``namespace`` link through ``..data``; a rotation writes a new
directory and renames a new ``..data`` symlink over the old one, so a reader sees either the
old files or the new ones, never a mix.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import os
import shutil
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["APIServerFront", "CertificateAuthority", "ProjectedServiceAccount"]

HOP_BY_HOP = {"host", "authorization", "connection", "content-length", "transfer-encoding"}


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CertificateAuthority:
    """A cluster CA that signs server certificates for loopback addresses."""

    def __init__(self, name: str = "kubernetes") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
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
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def server_context(self, directory: Path, ip: str = "127.0.0.1") -> ssl.SSLContext:
        """A server TLS context with a certificate for ``ip`` signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        cert_file, key_file = directory / "apiserver.crt", directory / "apiserver.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + self.pem)
        key_file.write_bytes(_pem_key(key))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        return context


@dataclass
class APIServerFront:
    """HTTPS with bearer-token authentication in front of the emulator at ``upstream``."""

    upstream: str
    ca: CertificateAuthority
    workdir: Path
    tokens: set[str] = field(default_factory=set)
    presented: list[str] = field(default_factory=list)
    refused: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, "127.0.0.1", 0, ssl_context=self.ca.server_context(self.workdir)
        )
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def rotate(self, token: str) -> None:
        """Honour ``token`` only: the previous tokens are refused from now on."""
        self.tokens = {token}

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        self.presented.append(token)
        if scheme != "Bearer" or token not in self.tokens:
            self.refused += 1
            return web.json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": "Unauthorized",
                    "reason": "Unauthorized",
                    "code": 401,
                },
                status=401,
            )
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._session.request(
            request.method,
            self.upstream.rstrip("/") + request.rel_url.path_qs,
            headers=headers,
            data=await request.read(),
        ) as answer:
            return web.Response(
                status=answer.status,
                body=await answer.read(),
                content_type=answer.content_type,
            )


class ProjectedServiceAccount:
    """The kubelet's view of ``/var/run/secrets/kubernetes.io/serviceaccount`` in a pod."""

    FILES = ("token", "ca.crt", "namespace")

    def __init__(self, directory: Path, *, token: str, ca_pem: bytes, namespace: str) -> None:
        self.directory = directory
        self.ca_pem = ca_pem
        self.namespace = namespace
        self._generation = itertools.count()
        directory.mkdir(parents=True)
        self._write(token)
        for name in self.FILES:
            (directory / name).symlink_to(Path("..data") / name)

    def rotate(self, token: str) -> None:
        """Replace the token as the kubelet does: a new directory, then one atomic rename."""
        old = os.readlink(self.directory / "..data")
        self._write(token)
        shutil.rmtree(self.directory / old)

    def _write(self, token: str) -> None:
        data = f"..2026_01_01_00_00_00.{next(self._generation)}"
        (self.directory / data).mkdir()
        (self.directory / data / "token").write_text(token, encoding="utf-8")
        (self.directory / data / "ca.crt").write_bytes(self.ca_pem)
        (self.directory / data / "namespace").write_text(self.namespace, encoding="utf-8")
        tmp = self.directory / "..data_tmp"
        tmp.symlink_to(data)
        os.replace(tmp, self.directory / "..data")
