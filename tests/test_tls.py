"""TLS without a proxy: with TLS_CERT_FILE + TLS_KEY_FILE the server speaks HTTPS and
wss:// itself, to clients that verify its certificate; a pair that cannot be used
stops start-up with one line naming the setting."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.processes import stop_process
from tests.support.publishing import RawRedisPublisher, make_update
from tests.support.servers import REPO_ROOT
from tests.support.waiting import PROMPT, Inbox, eventually, free_port
from tests.support.nginx import NGINX_MAIN, nginx_executable_path, render_site


@dataclass
class Certificates:
    ca: Path  # the trust root clients are given
    cert: Path  # the server's certificate, for 127.0.0.1 and localhost, issued by the CA
    key: Path  # its private key
    other_key: Path  # a key of no certificate here
    encrypted_key: Path  # the server's key, encrypted with a passphrase


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_certificates(directory: Path) -> Certificates:
    """A test CA and a server certificate it issued, valid for an hour."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stockstream test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = Certificates(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "other.key",
        directory / "encrypted.key",
    )
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(_pem_key(key))
    paths.other_key.write_bytes(_pem_key(ec.generate_private_key(ec.SECP256R1())))
    paths.encrypted_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return paths


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def trusting(certificates: Certificates) -> ssl.SSLContext:
    """A client context that trusts the test CA only, verifying host names as usual."""
    return ssl.create_default_context(cafile=str(certificates.ca))


async def https_ready(url: str, context: ssl.SSLContext) -> bool:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            async with http.get(url + "/readyz", ssl=context) as resp:
                return resp.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return False


async def test_server_speaks_https_and_wss_to_clients_that_verify_it(
    servers, redis_url: str, clients, node_harness, certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/healthz over https, the original README's WebSocket client over wss:// under Node,
    socket.io-client under Node and python-socketio over https (upgraded to wss), all
    verifying the certificate against the test CA; a client that does not trust the CA
    is refused."""
    server = servers.launch(
        {"LOG_LEVEL": "info", "TLS_CERT_FILE": str(certificates.cert), "TLS_KEY_FILE": str(certificates.key)},
        redis_url=redis_url,
    )
    base = f"https://127.0.0.1:{server.port}"
    context = trusting(certificates)
    await eventually(lambda: https_ready(base, context), 20.0, "/readyz over https")
    assert f"stockstream serving on {base} " in server.output(), server.output()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        async with http.get(base + "/healthz", ssl=context) as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.get(base + "/healthz")  # the system's trust store does not know the test CA

    monkeypatch.setenv("NODE_EXTRA_CA_CERTS", str(certificates.ca))
    readme = await clients.readme(f"wss://127.0.0.1:{server.port}/live-price")
    await readme.wait_for_log(lambda args: args == ["Connected to WebSocket server"], what="the wss:// connection")
    await readme.wait_for_log(
        lambda args: len(args) == 2 and isinstance(args[1], dict) and args[1].get("type") == "subscribed",
        what="the subscribe reply",
    )
    node_sio = await clients.sio(base, kind="node")
    assert (await node_sio.subscribe(["AAPL"]))["ok"] is True

    updates: Inbox[Any] = Inbox("python-socketio over https")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        sio = socketio.AsyncClient(http_session=session, reconnection=False)
        sio.on("stockUpdate", updates.put)
        await sio.connect(base, wait_timeout=10)
        try:
            ack = await sio.call("subscribe", ["AAPL"], timeout=PROMPT)
            assert ack["ok"] is True and ack["symbols"] == ["AAPL"], ack
            await eventually(lambda: sio.transport() == "websocket", PROMPT, "the upgrade to wss://")

            publisher = RawRedisPublisher(redis_url)
            try:
                update = make_update("AAPL", 189.45, note="over tls")
                await publisher.set_and_publish(update)
            finally:
                await publisher.close()
            received = await updates.next(lambda u: u.get("note") == "over tls", what="the update over wss")
            assert received == update
            await readme.wait_for_log(
                lambda args: len(args) == 2 and isinstance(args[1], dict) and args[1].get("note") == "over tls",
                what="the update over wss",
            )
            await node_sio.expect_update(lambda u: u.get("note") == "over tls")
            assert node_sio.transport == "websocket"
        finally:
            await sio.disconnect()


def readme_nginx_tls_block() -> str:
    blocks = re.findall(r"```nginx\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S)
    tls = [block for block in blocks if "listen 443 ssl;" in block]
    assert len(tls) == 1, "the README should have one nginx block that terminates TLS"
    return tls[0]


async def test_readme_nginx_block_terminates_tls_in_front_of_an_instance(
    servers,
    redis_url: str,
    clients,
    node_harness,
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The alternative to TLS in the server: the README's nginx TLS block, as written, in front
    of a plain-HTTP instance; the README's WebSocket client reaches it over wss://."""
    executable = nginx_executable_path()
    if executable is None:
        pytest.skip("nginx is not installed (Debian: apt-get install -y nginx)")
    server = await servers.start(redis_url=redis_url)
    port = free_port()
    block = readme_nginx_tls_block()
    for documented, here in (
        ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
        ("/etc/ssl/stockstream/fullchain.pem", str(certificates.cert)),
        ("/etc/ssl/stockstream/privkey.pem", str(certificates.key)),
    ):
        assert documented in block, documented
        block = block.replace(documented, here)
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    (prefix / "stockstream.conf").write_text(
        render_site(f"127.0.0.1:{free_port()}", [f"127.0.0.1:{server.port}"]) + block
    )
    (prefix / "nginx.conf").write_text(NGINX_MAIN.format(prefix=prefix))
    with open(prefix / "nginx.log", "wb") as log:
        proc = subprocess.Popen(
            [executable, "-p", str(prefix), "-e", "stderr", "-c", str(prefix / "nginx.conf")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"https://127.0.0.1:{port}"
        await eventually(lambda: https_ready(base, trusting(certificates)), 10.0, "nginx to answer /readyz over https")
        monkeypatch.setenv("NODE_EXTRA_CA_CERTS", str(certificates.ca))
        readme = await clients.readme(f"wss://127.0.0.1:{port}/live-price")
        await readme.wait_for_log(
            lambda args: len(args) == 2 and isinstance(args[1], dict) and args[1].get("type") == "subscribed",
            what="the subscribe reply through nginx",
        )
        publisher = RawRedisPublisher(redis_url)
        try:
            await publisher.set_and_publish(make_update("AAPL", 190.5, note="through nginx"))
        finally:
            await publisher.close()
        await readme.wait_for_log(
            lambda args: len(args) == 2 and isinstance(args[1], dict) and args[1].get("note") == "through nginx",
            what="the update through nginx",
        )
    finally:
        stop_process(proc)


def start_refused(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "run.py"), "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    "case, name, why",
    [
        ("only-cert", "TLS_KEY_FILE", "must be set as well"),
        ("only-key", "TLS_CERT_FILE", "must be set as well"),
        ("missing-cert", "TLS_CERT_FILE", "cannot read"),
        ("unreadable-key", "TLS_KEY_FILE", "cannot read"),
        ("cert-not-pem", "TLS_CERT_FILE", "no PEM certificate"),
        ("key-not-pem", "TLS_KEY_FILE", "no PEM private key"),
        ("key-of-another-certificate", "TLS_KEY_FILE", "not the key of the certificate"),
        ("encrypted-key", "TLS_KEY_FILE", "encrypted"),
    ],
)
def test_unusable_tls_settings_stop_start_up_with_one_line(
    tmp_path: Path, certificates: Certificates, case: str, name: str, why: str
) -> None:
    """Only one of the pair, a missing or unreadable file, or a key that is not the
    certificate's: `python run.py` exits 2 with one line naming the setting."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a pem file\n")
    cert, key = str(certificates.cert), str(certificates.key)
    env = {
        "only-cert": {"TLS_CERT_FILE": cert},
        "only-key": {"TLS_KEY_FILE": key},
        "missing-cert": {"TLS_CERT_FILE": str(tmp_path / "nowhere.pem"), "TLS_KEY_FILE": key},
        # A directory cannot be read as a file (permissions would not stop root).
        "unreadable-key": {"TLS_CERT_FILE": cert, "TLS_KEY_FILE": str(tmp_path)},
        "cert-not-pem": {"TLS_CERT_FILE": str(junk), "TLS_KEY_FILE": key},
        "key-not-pem": {"TLS_CERT_FILE": cert, "TLS_KEY_FILE": str(junk)},
        "key-of-another-certificate": {"TLS_CERT_FILE": cert, "TLS_KEY_FILE": str(certificates.other_key)},
        "encrypted-key": {"TLS_CERT_FILE": cert, "TLS_KEY_FILE": str(certificates.encrypted_key)},
    }[case]
    result = start_refused(tmp_path, env)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"stockstream: bad setting: {name}"), result.stderr
    assert why in lines[0], lines[0]
    assert result.stdout == ""
