"""`central ca init`, `central gateway enroll`, `central broker config` — the files they leave.

No broker here: test_broker_security.py proves the files work against a real mosquitto.
"""

from __future__ import annotations

import base64
import json
import re
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from central.cli import cli
from central.security import EnrolmentError, validate_gateway_id
from central.security.broker_config import BrokerSettings, render_acl, render_mosquitto_conf
from shared_protocol.errors import LocalProtocolError
from shared_protocol.wire.envelope import load_public_key
from shared_protocol.wire.topics import batch_topic

ROOT = Path(__file__).resolve().parent.parent


def run(state_dir: Path, *argv: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--state-dir", str(state_dir), *argv])
    return result.exit_code, result.output


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    code, output = run(state, "ca", "init")
    assert code == 0, output
    return state


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- names ------------------------------------------------------------------------------------


INVALID_IDS = ["gw/1", "+", "#", "GW1", "Gw-1", "", "-gw", "gw 1", "gw_1", "a" * 64, "gw.1", "gw-é"]


@pytest.mark.parametrize("name", INVALID_IDS)
def test_an_invalid_gateway_id_is_refused_with_the_rule(state_dir: Path, name: str) -> None:
    # `--`: a name starting with '-' would otherwise be taken for an option
    code, output = run(state_dir, "gateway", "enroll", "--", name)

    assert code == 1
    assert f"gateway id {name!r} is not valid" in output
    assert "a-z, 0-9 and '-'" in output
    assert not (state_dir / "gateways").exists()


@pytest.mark.parametrize("name", [*INVALID_IDS, "central", "gw-1", "a" * 63])
def test_enrolment_and_the_wire_contract_agree_on_gateway_ids(name: str) -> None:
    try:
        validate_gateway_id(name)
        ours = True
    except EnrolmentError:
        ours = False
    try:
        batch_topic(name)  # the contract refuses an id that is not a gateway's
        theirs = True
    except LocalProtocolError:
        theirs = False
    assert ours == theirs


def test_the_central_service_id_cannot_be_enrolled_as_a_gateway(state_dir: Path) -> None:
    code, output = run(state_dir, "gateway", "enroll", "central")

    assert code == 1
    assert "reserved for the central service" in output


@pytest.mark.parametrize("name", ["a", "0", "gw-0001", "a" * 63, "7-x-"])
def test_valid_gateway_ids_enrol(state_dir: Path, name: str) -> None:
    code, output = run(state_dir, "gateway", "enroll", name)

    assert code == 0, output
    assert (state_dir / "gateways" / f"{name}.json").exists()


# --- re-enrolment -----------------------------------------------------------------------------


def test_re_enrolling_is_refused_without_force_and_replaces_keys_with_it(
    state_dir: Path,
) -> None:
    assert run(state_dir, "gateway", "enroll", "gw-1")[0] == 0
    first = json.loads((state_dir / "gateways" / "gw-1.json").read_text())

    code, output = run(state_dir, "gateway", "enroll", "gw-1")
    assert code == 1
    assert "already enrolled" in output and "--force" in output
    assert json.loads((state_dir / "gateways" / "gw-1.json").read_text()) == first

    code, output = run(state_dir, "gateway", "enroll", "gw-1", "--force", "--json")
    assert code == 0, output
    second = json.loads(output)
    assert second["signing_public_key"] != first["signing_public_key"]
    assert second["certificate_serial"] != first["certificate_serial"]
    assert second["superseded_certificate_serials"] == [first["certificate_serial"]]


def test_enrolling_without_a_ca_says_how_to_make_one(tmp_path: Path) -> None:
    code, output = run(tmp_path / "empty", "gateway", "enroll", "gw-1")

    assert code == 1
    assert "central ca init" in output


def test_ca_init_refuses_to_replace_a_ca(state_dir: Path) -> None:
    before = (state_dir / "ca" / "ca.key").read_bytes()

    code, output = run(state_dir, "ca", "init")

    assert code == 1 and "already exists" in output
    assert (state_dir / "ca" / "ca.key").read_bytes() == before


# --- what an enrolment leaves behind ----------------------------------------------------------


def test_the_bundle_holds_a_ca_signed_client_certificate_and_the_registered_signing_key(
    state_dir: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "usb" / "gw-7"
    code, output = run(state_dir, "gateway", "enroll", "gw-7", "--out", str(bundle))
    assert code == 0, output

    assert sorted(path.name for path in bundle.iterdir()) == sorted(
        ["ca.crt", "gateway.crt", "gateway.key", "signing.key", "signing.pub", "gateway.json"]
    )
    ca = x509.load_pem_x509_certificate((state_dir / "ca" / "ca.crt").read_bytes())
    certificate = x509.load_pem_x509_certificate((bundle / "gateway.crt").read_bytes())
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-7"
    certificate.verify_directly_issued_by(ca)
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    key = serialization.load_pem_private_key((bundle / "gateway.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert (bundle / "ca.crt").read_bytes() == (state_dir / "ca" / "ca.crt").read_bytes()

    record = json.loads((state_dir / "gateways" / "gw-7.json").read_text())
    assert record == json.loads((bundle / "gateway.json").read_text())
    assert record["format"] == 1 and record["gateway_id"] == "gw-7"
    signing_key = serialization.load_pem_private_key((bundle / "signing.key").read_bytes(), None)
    assert isinstance(signing_key, Ed25519PrivateKey)
    raw_public = signing_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert base64.b64decode(record["signing_public_key"]) == raw_public
    assert record["signing_public_key_pem"] == (bundle / "signing.pub").read_text()
    assert (
        load_public_key(record["signing_public_key_pem"].encode()).public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        == raw_public
    )
    assert record["signing_key_id"] == "gw-7"
    assert record["certificate_serial"] == f"{certificate.serial_number:x}"


def test_private_keys_are_written_0600(state_dir: Path) -> None:
    assert run(state_dir, "gateway", "enroll", "gw-1")[0] == 0
    bundle = state_dir / "bundles" / "gw-1"

    assert _mode(state_dir / "ca" / "ca.key") == 0o600
    assert _mode(bundle / "gateway.key") == 0o600
    assert _mode(bundle / "signing.key") == 0o600
    assert _mode(bundle / "gateway.crt") == 0o644


def test_gateway_list_shows_the_registry(state_dir: Path) -> None:
    for name in ("gw-2", "gw-1"):
        assert run(state_dir, "gateway", "enroll", name)[0] == 0

    code, output = run(state_dir, "gateway", "list", "--json")

    assert code == 0
    assert [entry["gateway_id"] for entry in json.loads(output)] == ["gw-1", "gw-2"]


# --- broker files -----------------------------------------------------------------------------


def test_broker_config_writes_the_config_acl_and_server_certificate(
    state_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "etc"
    code, output = run(
        state_dir, "broker", "config", "--out", str(out), "--port", "18883",
        "--hostname", "mqtt.example.net", "--persistence-dir", str(tmp_path / "data"),
    )  # fmt: skip
    assert code == 0, output

    config = (out / "mosquitto.conf").read_text()
    assert "listener 18883 127.0.0.1\n" in config
    assert f"acl_file {out / 'acl'}\n" in config
    assert (out / "acl").read_text() == render_acl()
    assert _mode(out / "server.key") == 0o600
    server = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mqtt.example.net"]


def test_central_service_cert_has_the_reserved_cn(state_dir: Path, tmp_path: Path) -> None:
    code, output = run(state_dir, "broker", "service-cert", "--out", str(tmp_path / "mqtt"))
    assert code == 0, output

    certificate = x509.load_pem_x509_certificate((tmp_path / "mqtt" / "central.crt").read_bytes())
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "central"
    assert _mode(tmp_path / "mqtt" / "central.key") == 0o600


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("mosquitto.conf", render_mosquitto_conf(BrokerSettings())),
        ("acl", render_acl()),
    ],
)
def test_the_deploy_templates_are_what_central_renders(template: str, rendered: str) -> None:
    # Regenerate with: python -c "from central.security.broker_config import *; ..." (see
    # docs/operations-broker.md) — the template must never drift from the tested config.
    assert (ROOT / "deploy" / "mosquitto" / template).read_text(encoding="utf-8") == rendered


def test_the_production_config_has_no_plaintext_or_anonymous_path() -> None:
    lines = render_mosquitto_conf(BrokerSettings()).splitlines()

    assert [line for line in lines if line.startswith("listener ")] == ["listener 8883 127.0.0.1"]
    for required in (
        "allow_anonymous false",
        "require_certificate true",
        "use_identity_as_username true",
        "persistence true",
    ):
        assert required in lines
    assert not any(line.startswith(("password_file", "allow_anonymous true")) for line in lines)


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


@pytest.mark.parametrize("path", _commands(cli), ids=lambda path: " ".join(path) or "central")
def test_every_command_help_has_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])

    assert result.exit_code == 0
    # "Example:", "Examples:" or "Example (what it is for):", then a `central` command line
    found = re.search(r"Examples?(?: \([^)]*\))?:\n(.*)", result.output, re.S)
    assert found is not None, result.output
    assert "central" in found.group(1)


# --- revocation -------------------------------------------------------------------------------


def test_revoke_marks_the_registry_and_lists_every_serial_in_the_crl(
    state_dir: Path, tmp_path: Path
) -> None:
    assert run(state_dir, "gateway", "enroll", "gw-1")[0] == 0
    assert run(state_dir, "gateway", "enroll", "gw-1", "--force")[0] == 0
    entry = json.loads((state_dir / "gateways" / "gw-1.json").read_text())

    code, output = run(state_dir, "gateway", "revoke", "gw-1")
    assert code == 0, output
    code, output = run(state_dir, "broker", "crl", "--out", str(tmp_path / "etc"))
    assert code == 0, output

    assert json.loads((state_dir / "gateways" / "gw-1.json").read_text())["revoked_at"]
    crl = x509.load_pem_x509_crl((tmp_path / "etc" / "crl.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((state_dir / "ca" / "ca.crt").read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    revoked = {f"{item.serial_number:x}" for item in crl}
    assert revoked == {entry["certificate_serial"], *entry["superseded_certificate_serials"]}
    assert crl.next_update_utc == ca.not_valid_after_utc  # never expires before the CA


def test_revoking_an_unknown_gateway_says_so(state_dir: Path) -> None:
    code, output = run(state_dir, "gateway", "revoke", "gw-404")

    assert code == 1
    assert "not enrolled" in output


def test_an_existing_out_directory_keeps_its_mode(state_dir: Path, tmp_path: Path) -> None:
    stick = tmp_path / "usb"
    stick.mkdir(mode=0o755)
    stick.chmod(0o755)

    assert run(state_dir, "gateway", "enroll", "gw-1", "--out", str(stick))[0] == 0

    assert _mode(stick) == 0o755
    assert _mode(stick / "gateway.key") == 0o600


def test_a_new_bundle_directory_is_private(state_dir: Path) -> None:
    assert run(state_dir, "gateway", "enroll", "gw-1")[0] == 0

    assert _mode(state_dir / "bundles" / "gw-1") == 0o700
    assert _mode(state_dir / "ca") == 0o700


def test_the_registry_format_is_the_documented_one(state_dir: Path) -> None:
    # Central's database imports these files; docs/operations-broker.md is their contract.
    code, output = run(state_dir, "gateway", "enroll", "gw-1", "--json")
    assert code == 0, output
    record = json.loads((state_dir / "gateways" / "gw-1.json").read_text())
    docs = (ROOT / "docs" / "operations-broker.md").read_text(encoding="utf-8")
    documented = json.loads(
        docs.split("### The registry", 1)[1].split("```json", 1)[1].split("```")[0]
    )

    assert set(record) == set(documented)
    assert record["format"] == documented["format"] == 1
