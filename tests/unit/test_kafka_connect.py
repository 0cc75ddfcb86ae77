"""Naming why a secured connection failed (producer.kafka.connect), without a broker.

The real broker cases are in tests/integration/test_secure_kafka.py; here, each branch of
the classification, and the TLS diagnosis against a TLS server made in the test."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from devstack.tls import BrokerCertificates, make_broker_certificates, make_ca
from producer.kafka.connect import classify, tls_verdict

VERIFY_FAILED = (
    "ssl://{address}/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate "
    "verify failed: broker certificate could not be verified, verify that ssl.ca.location is "
    "correctly configured (after 4ms in state SSL_HANDSHAKE)"
)


def test_a_refused_login_is_authentication_naming_the_user_never_the_password() -> None:
    error = KafkaError(
        KafkaError._AUTHENTICATION,
        "sasl_ssl://10.0.0.7:9093/bootstrap: SASL authentication error: Authentication failed "
        "(after 307ms in state AUTH_REQ)",
    )
    config = {
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "pw-never-shown",
    }
    problem = classify(error, config)
    assert problem is not None
    assert (problem.cause, problem.address) == ("authentication", "10.0.0.7:9093")
    assert str(problem) == (
        "authentication failed: the broker refused the SCRAM-SHA-512 login of user 'svc' "
        "(SASL authentication error: Authentication failed)"
    )
    assert "pw-never-shown" not in f"{problem} {problem.check}"
    assert "KAFKA_SASL_PASSWORD" in problem.check


def test_a_refused_client_certificate_is_tls_client_authentication() -> None:
    error = KafkaError(
        KafkaError._TRANSPORT,
        "ssl://127.0.0.1:9093/bootstrap: Receive failed: error:0A000412:SSL routines::ssl/tls "
        "alert bad certificate: SSL alert number 42 (after 0ms in state APIVERSION_QUERY)",
    )
    problem = classify(error, {})
    assert problem is not None
    assert problem.cause == "TLS client authentication"
    assert "KAFKA_SSL_CERTIFICATE_LOCATION" in problem.check


def test_what_may_pass_is_not_classified() -> None:
    refused = KafkaError(
        KafkaError._TRANSPORT,
        "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused "
        "(after 0ms in state CONNECT)",
    )
    assert classify(refused, {}) is None
    assert classify(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"), {}) is None


def test_a_verify_failure_at_an_address_that_no_longer_answers_is_trust(
    closed_address: str,
) -> None:
    error = KafkaError(KafkaError._SSL, VERIFY_FAILED.format(address=closed_address))
    problem = classify(error, {"ssl.ca.location": "/nonexistent/ca.pem"})
    assert problem is not None
    assert problem.cause == "TLS trust"
    assert "KAFKA_SSL_CA_LOCATION" in problem.check


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> BrokerCertificates:
    return make_broker_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def closed_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def tls_server(certificates: BrokerCertificates) -> Iterator[int]:
    """A TLS server presenting the broker certificate (SAN localhost, 127.0.0.1)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certificates.broker.cert), str(certificates.broker.key))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # closing a socket does not wake a blocked accept()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_the_tls_diagnosis_tells_trust_from_hostname(
    tls_server: int, certificates: BrokerCertificates, tmp_path: Path
) -> None:
    trusted = {"ssl.ca.location": str(certificates.ca.cert)}
    assert tls_verdict("127.0.0.1", tls_server, trusted) is None
    assert tls_verdict("localhost", tls_server, trusted) is None

    # "127.1" reaches 127.0.0.1 but is neither the DNS name nor the IP in the certificate.
    verdict = tls_verdict("127.1", tls_server, trusted)
    assert verdict is not None
    assert verdict[0] == "hostname", verdict
    # ... unless the client turned hostname verification off, as librdkafka then does
    assert (
        tls_verdict(
            "127.1", tls_server, {**trusted, "ssl.endpoint.identification.algorithm": "none"}
        )
        is None
    )

    other = make_ca(tmp_path, "other-ca")
    verdict = tls_verdict("127.0.0.1", tls_server, {"ssl.ca.location": str(other.cert)})
    assert verdict is not None
    assert verdict[0] == "trust", verdict
