"""Broker security: the device CA, gateway enrolment and the Mosquitto configuration.

Every gateway talks to the broker over mutual TLS with a certificate from a *dedicated*
device CA: Mosquitto's `use_identity_as_username` trusts any certificate its `cafile`
vouches for, so that CA must issue nothing but broker identities. The certificate's CN is
the MQTT username, and pattern ACLs (`%u`) keep each gateway on its own topics.

    ca.py            the device CA on disk; issues client and broker server certificates
    enrolment.py     `central gateway enroll`: gateway ids, bundles, the registry
    broker_config.py the Mosquitto config and ACL, rendered from one table of grants

Errors: everything a caller should show to an operator is a `SecurityError` with a message
written for that operator (`EnrolmentError` and `CertificateAuthorityError` are kinds of it).
"""

from central.security.broker_config import (
    BrokerSettings,
    render_acl,
    render_mosquitto_conf,
    write_broker_config,
)
from central.security.ca import (
    CertificateAuthorityError,
    DeviceCA,
    IssuedIdentity,
    SecurityError,
)
from central.security.enrolment import (
    CENTRAL_SERVICE_ID,
    EnrolmentError,
    GatewayEnrolment,
    enroll_gateway,
    issue_central_service_identity,
    list_gateways,
    revoke_gateway,
    validate_gateway_id,
)

__all__ = [
    "CENTRAL_SERVICE_ID",
    "BrokerSettings",
    "CertificateAuthorityError",
    "DeviceCA",
    "EnrolmentError",
    "GatewayEnrolment",
    "IssuedIdentity",
    "SecurityError",
    "enroll_gateway",
    "issue_central_service_identity",
    "list_gateways",
    "render_acl",
    "render_mosquitto_conf",
    "revoke_gateway",
    "validate_gateway_id",
    "write_broker_config",
]
