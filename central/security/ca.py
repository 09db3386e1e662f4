"""The device CA: one ECDSA P-256 key that signs broker identities and nothing else.

Why ECDSA P-256: Mosquitto 2.0 on OpenSSL 1.1/3.0 accepts it on every TLS version it
speaks (Ed25519 certificates need TLS 1.3 on both ends, and older gateway OpenSSL builds
refuse them), and P-256 is the curve DLMS security suite 1 already uses in the field.

Why a dedicated CA: with `use_identity_as_username`, Mosquitto lets *any* certificate its
`cafile` vouches for connect as the CN it carries (mosquitto.conf(5)). A CA that also signs
web servers or staff laptops would turn each of those into a broker login.

On disk (`<state dir>/ca/`):

    ca.crt        the CA certificate (public; installed on gateways and the broker)
    ca.key        its private key, mode 0600 — the one secret that can mint gateways
    revoked.json  serials revoked so far: {"revoked": [{"serial", "common_name", "revoked_at"}]}
    crl.pem       the CRL built from revoked.json; the broker's `crlfile`

The CRL's nextUpdate is the CA's own expiry: OpenSSL refuses *every* client once the CRL
it was given has expired, and a broker reading a local file needs no freshness promise.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERTIFICATE_NAME = "ca.crt"
CA_KEY_NAME = "ca.key"
CRL_NAME = "crl.pem"
REVOKED_NAME = "revoked.json"

DEFAULT_CA_DAYS = 3650
# Gateways sit in substations for years and are re-enrolled on site visits; two years keeps a
# leaked key bounded without forcing a truck roll every season.
DEFAULT_CLIENT_DAYS = 730
DEFAULT_SERVER_DAYS = 730
# Certificates start a little in the past: a gateway whose RTC lags the CA host by minutes
# must not see a "not yet valid" certificate right after enrolment.
_BACKDATE = dt.timedelta(minutes=10)


class SecurityError(Exception):
    """Something an operator must fix; the message says what and how."""


class CertificateAuthorityError(SecurityError):
    """The device CA is missing, already present, or unreadable."""


@dataclass(frozen=True)
class IssuedIdentity:
    """A certificate and its private key, both PEM, as issued by the device CA."""

    common_name: str
    certificate_pem: bytes
    private_key_pem: bytes
    serial_number: int
    not_after: dt.datetime

    @property
    def fingerprint_sha256(self) -> str:
        certificate = x509.load_pem_x509_certificate(self.certificate_pem)
        return certificate.fingerprint(hashes.SHA256()).hex()

    def write(self, directory: Path, certificate_name: str, key_name: str) -> tuple[Path, Path]:
        """Write `certificate_name` (0644) and `key_name` (0600) into `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        certificate_path = directory / certificate_name
        key_path = directory / key_name
        write_public_file(certificate_path, self.certificate_pem)
        write_private_file(key_path, self.private_key_pem)
        return certificate_path, key_path


def write_private_file(path: Path, data: bytes) -> None:
    """Write a secret so that it is never readable by others, not even for a moment.

    The file is created 0600 under a temporary name and renamed over the target, so a crash
    leaves either the old key or the new one, never a half-written or world-readable one.
    """
    _write_atomically(path, data, 0o600)


def write_public_file(path: Path, data: bytes) -> None:
    _write_atomically(path, data, 0o644)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # umask may have narrowed or an old file kept its mode
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # PKCS#8 unencrypted: Mosquitto (and paho) load it without a passphrase prompt; the
    # protection is the file mode and the host, as for any service key.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class DeviceCA:
    """The device CA in `directory` (`ca.crt` + `ca.key`)."""

    def __init__(
        self,
        directory: Path,
        certificate: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
    ) -> None:
        self.directory = directory
        self.certificate = certificate
        self._key = key

    @property
    def certificate_path(self) -> Path:
        return self.directory / CA_CERTIFICATE_NAME

    @property
    def key_path(self) -> Path:
        return self.directory / CA_KEY_NAME

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def crl_path(self) -> Path:
        return self.directory / CRL_NAME

    def revoked(self) -> list[dict[str, str]]:
        path = self.directory / REVOKED_NAME
        if not path.exists():
            return []
        entries: list[dict[str, str]] = json.loads(path.read_text(encoding="utf-8"))["revoked"]
        return entries

    def revoke(self, serial_hex: str, common_name: str) -> bool:
        """Add a serial to the CRL (rewrites crl.pem); False if it was already revoked."""
        entries = self.revoked()
        if any(entry["serial"] == serial_hex for entry in entries):
            return False
        entries.append(
            {
                "serial": serial_hex,
                "common_name": common_name,
                "revoked_at": _now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
        text = json.dumps({"revoked": entries}, indent=2) + "\n"
        write_public_file(self.directory / REVOKED_NAME, text.encode("utf-8"))
        write_public_file(self.crl_path, self.crl_pem())
        return True

    def crl_pem(self) -> bytes:
        """A CRL listing every revoked serial, valid until the CA itself expires."""
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now - _BACKDATE)
            .next_update(self.certificate.not_valid_after_utc)
        )
        for entry in self.revoked():
            revoked_at = dt.datetime.strptime(entry["revoked_at"], "%Y-%m-%dT%H:%M:%SZ")
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(entry["serial"], 16))
                .revocation_date(revoked_at.replace(tzinfo=dt.UTC))
                .build()
            )
        crl = builder.sign(self._key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.PEM)

    @staticmethod
    def exists(directory: Path) -> bool:
        return (directory / CA_CERTIFICATE_NAME).exists() or (directory / CA_KEY_NAME).exists()

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        name: str = "meter2cash device CA",
        days: int = DEFAULT_CA_DAYS,
    ) -> DeviceCA:
        """Create a new CA in `directory`; refuses to overwrite one that is there."""
        if cls.exists(directory):
            raise CertificateAuthorityError(
                f"a device CA already exists in {directory}; replacing it would lock out every "
                "enrolled gateway. Remove it by hand only if that is what you want."
            )
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=days))
            # pathlen 0: the device CA signs leaf certificates only, never another CA.
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
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        write_private_file(directory / CA_KEY_NAME, _private_key_pem(key))
        write_public_file(
            directory / CA_CERTIFICATE_NAME, certificate.public_bytes(serialization.Encoding.PEM)
        )
        authority = cls(directory, certificate, key)
        write_public_file(authority.crl_path, authority.crl_pem())
        return authority

    @classmethod
    def load(cls, directory: Path) -> DeviceCA:
        certificate_path = directory / CA_CERTIFICATE_NAME
        key_path = directory / CA_KEY_NAME
        if not certificate_path.exists() or not key_path.exists():
            raise CertificateAuthorityError(
                f"no device CA in {directory} (need {CA_CERTIFICATE_NAME} and {CA_KEY_NAME}); "
                "create one with `central ca init`"
            )
        try:
            certificate = x509.load_pem_x509_certificate(certificate_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (ValueError, TypeError) as error:
            raise CertificateAuthorityError(
                f"cannot read the device CA in {directory}: {error}"
            ) from error
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateAuthorityError(f"{key_path} is not an ECDSA key")
        if key.public_key().public_numbers() != certificate.public_key().public_numbers():  # type: ignore[union-attr]
            raise CertificateAuthorityError(f"{key_path} does not belong to {certificate_path}")
        return cls(directory, certificate, key)

    @classmethod
    def load_or_create(cls, directory: Path) -> DeviceCA:
        """For tests and first-run tooling; operators use `create` and `load` explicitly."""
        if cls.exists(directory):
            return cls.load(directory)
        return cls.create(directory)

    def issue_client(self, common_name: str, *, days: int = DEFAULT_CLIENT_DAYS) -> IssuedIdentity:
        """A TLS client certificate whose CN becomes the MQTT username at the broker."""
        return self._issue(
            common_name,
            days=days,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            alternative_names=[],
        )

    def issue_server(
        self, hostnames: list[str], *, days: int = DEFAULT_SERVER_DAYS
    ) -> IssuedIdentity:
        """The broker's certificate; `hostnames` are DNS names or IP addresses clients dial."""
        if not hostnames:
            raise SecurityError("the broker certificate needs at least one hostname or address")
        names: list[x509.GeneralName] = []
        for host in hostnames:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        return self._issue(
            hostnames[0],
            days=days,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            alternative_names=names,
        )

    def _issue(
        self,
        common_name: str,
        *,
        days: int,
        usage: x509.ObjectIdentifier,
        alternative_names: list[x509.GeneralName],
    ) -> IssuedIdentity:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        not_after = min(
            now + dt.timedelta(days=days),
            self.certificate.not_valid_after_utc,  # never outlive the issuer
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if alternative_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(alternative_names), critical=False
            )
        certificate = builder.sign(self._key, hashes.SHA256())
        return IssuedIdentity(
            common_name=common_name,
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM),
            private_key_pem=_private_key_pem(key),
            serial_number=certificate.serial_number,
            not_after=certificate.not_valid_after_utc,
        )
