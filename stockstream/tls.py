"""HTTPS and wss:// without a proxy: the server's TLS context, from TLS_CERT_FILE and TLS_KEY_FILE.

Every way the pair can be unusable (a file missing or unreadable, not PEM, an
encrypted key, a key of another certificate) is a SettingsError naming the
setting, found before the server starts listening.
"""

from __future__ import annotations

import datetime
import logging
import ssl

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from .config import Settings, SettingsError, read_setting_file

log = logging.getLogger("stockstream")

_PUBLIC_DER = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context to serve with, or None when TLS is not configured."""
    if not (settings.tls_cert_file and settings.tls_key_file):
        return None  # Settings.check() refuses one without the other
    cert_path, key_path = settings.tls_cert_file, settings.tls_key_file
    certificate = _certificate(cert_path)
    key = _private_key(key_path)
    if key.public_key().public_bytes(*_PUBLIC_DER) != certificate.public_key().public_bytes(*_PUBLIC_DER):
        raise SettingsError(
            f"TLS_KEY_FILE: {key_path} is not the key of the certificate in TLS_CERT_FILE ({cert_path})"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_path, key_path)
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(f"TLS_CERT_FILE, TLS_KEY_FILE: cannot be used together: {exc}") from None
    expires = certificate.not_valid_after_utc
    if expires <= datetime.datetime.now(datetime.timezone.utc):
        log.warning("TLS_CERT_FILE: the certificate expired on %s; clients will refuse it", expires.date())
    return context


def _certificate(path: str) -> x509.Certificate:
    pem = read_setting_file("TLS_CERT_FILE", path)
    try:
        # The file may hold the whole chain; the server's own certificate comes first.
        return x509.load_pem_x509_certificates(pem)[0]
    except ValueError:
        raise SettingsError(f"TLS_CERT_FILE: {path} holds no PEM certificate") from None


def _private_key(path: str) -> PrivateKeyTypes:
    pem = read_setting_file("TLS_KEY_FILE", path)
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise SettingsError(
            f"TLS_KEY_FILE: {path} is encrypted; the server needs it unencrypted (readable only by the server's user)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise SettingsError(f"TLS_KEY_FILE: {path} holds no PEM private key") from None
