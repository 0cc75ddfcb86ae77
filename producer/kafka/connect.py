"""The start-up probe of the brokers, and why a secured connection failed.

librdkafka retries a refused login or a failed TLS handshake until the caller's timeout and
then reports `Local: Broker transport failure`, which sends an operator to the network. The
real cause is in the errors it hands to `error_cb` on the way. `probe_cluster` collects them
and stops at the first one that retrying cannot fix (a refused password, a certificate that
does not verify), naming the cause:

* ``authentication``: the broker refused the SASL credentials (`_AUTHENTICATION`);
* ``TLS client authentication``: the broker refused this client's certificate (mutual TLS);
* ``TLS trust`` / ``TLS hostname verification``: this client refused the broker's
  certificate. librdkafka words both as `certificate verify failed`, so the handshake is
  repeated with Python's `ssl` (the same OpenSSL checks) to tell an unknown issuer from a
  certificate issued for another name.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

#: librdkafka's wording when the broker aborts the handshake over this client's certificate
#: (TLS alerts bad_certificate, unknown_ca, certificate_required, ...).
_CLIENT_CERT_REFUSED = re.compile(
    r"alert (bad certificate|unknown ca|certificate required|certificate unknown|"
    r"handshake failure|access denied)",
    re.IGNORECASE,
)
#: librdkafka's prefix of a broker's error: `sasl_ssl://127.0.0.1:9093/bootstrap: `.
_BROKER_IN_ERROR = re.compile(
    r"^[a-z_]+://(?P<host>\[[^\]]+\]|[^:/\s]+):(?P<port>\d+)/[^:\s]*:?\s*"
)
_PROBE_STEP_S = 0.5


class ConnectionProblem(Exception):  # noqa: N818 - a diagnosis, raised like an error
    """A connection failure retrying cannot fix: `cause` names it, `check` what to fix."""

    def __init__(self, cause: str, detail: str, check: str, address: str) -> None:
        super().__init__(f"{cause} failed: {detail}")
        self.cause = cause
        self.detail = detail
        self.check = check
        self.address = address


class _Discard:
    """The probe's own librdkafka lines: their gist ends up in the one error it raises."""

    def log(self, *_args: Any) -> None:
        return None


def probe_cluster(config: Mapping[str, Any], timeout_s: float) -> None:
    """Fetch cluster metadata with `config`; raise `ConnectionProblem` as soon as a cause that
    retrying cannot fix shows up, else `KafkaException` (carrying librdkafka's last error
    rather than the generic transport failure) when `timeout_s` passes."""
    errors: list[KafkaError] = []
    probe_config = {**config, "error_cb": errors.append, "logger": _Discard()}
    admin = AdminClient(probe_config)
    deadline = time.monotonic() + timeout_s
    seen = 0
    while True:
        step = max(0.1, min(_PROBE_STEP_S, deadline - time.monotonic()))
        try:
            admin.list_topics(timeout=step)
            return
        except KafkaException as exc:
            failure = exc
        admin.poll(0)  # error_cb runs only here
        for error in errors[seen:]:
            problem = classify(error, config)
            if problem is not None:
                raise problem
        seen = len(errors)
        if time.monotonic() >= deadline:
            last = next(
                (e for e in reversed(errors) if e.code() != KafkaError._ALL_BROKERS_DOWN), None
            )
            raise KafkaException(last) if last is not None else failure


def classify(error: KafkaError, config: Mapping[str, Any]) -> ConnectionProblem | None:
    """The fixed cause behind one librdkafka error, or None for what may pass (a broker
    that is still starting, a network hiccup)."""
    text = str(error.str())
    address = _address(text, config)
    if error.code() == KafkaError._AUTHENTICATION:
        mechanism = config.get("sasl.mechanism") or config.get("sasl.mechanisms") or "SASL"
        user = config.get("sasl.username")
        whose = f" of user {user!r}" if user else ""
        return ConnectionProblem(
            "authentication",
            f"the broker refused the {mechanism} login{whose} ({_reason(text)})",
            "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM",
            address,
        )
    if "certificate verify failed" in text:
        host, port = _host_port(address)
        verdict = tls_verdict(host, port, config) if port else None
        if verdict is not None and verdict[0] == "hostname":
            return ConnectionProblem(
                "TLS hostname verification",
                f"the broker's certificate is not valid for {host} ({verdict[1]})",
                "that KAFKA_BOOTSTRAP_SERVERS and the brokers' advertised listeners use a name "
                "their certificates carry (subject alternative names)",
                address,
            )
        reason = verdict[1] if verdict is not None else _reason(text)
        return ConnectionProblem(
            "TLS trust",
            f"the broker's certificate is not signed by a CA this client trusts ({reason})",
            "KAFKA_SSL_CA_LOCATION: the CA certificate that signed the brokers' certificates",
            address,
        )
    if error.code() in (KafkaError._TRANSPORT, KafkaError._SSL) and (
        match := _CLIENT_CERT_REFUSED.search(text)
    ):
        return ConnectionProblem(
            "TLS client authentication",
            f"the broker refused this client's certificate (TLS alert: {match.group(1)})",
            "KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION: a certificate signed "
            "by a CA the brokers trust",
            address,
        )
    return None


def tls_verdict(host: str, port: int, config: Mapping[str, Any]) -> tuple[str, str] | None:
    """Repeat the TLS handshake with `config`'s CA: ("trust", why) when the chain does not
    verify, ("hostname", why) when only the name does not match, None when it verifies (or
    the broker cannot be reached now)."""
    try:
        context = _context(config)
    except (OSError, ssl.SSLError, ValueError):
        return None
    context.check_hostname = False
    try:
        _handshake(context, host, port)
    except ssl.SSLCertVerificationError as exc:
        return "trust", str(exc.verify_message)
    except (OSError, ssl.SSLError):
        pass  # e.g. the broker's answer to a missing client certificate: the chain verified
    if str(config.get("ssl.endpoint.identification.algorithm", "https")).lower() == "none":
        return None
    context.check_hostname = True
    try:
        _handshake(context, host, port)
    except ssl.SSLCertVerificationError as exc:
        return "hostname", str(exc.verify_message)
    except (OSError, ssl.SSLError):
        return None
    return None


def _context(config: Mapping[str, Any]) -> ssl.SSLContext:
    ca = str(config.get("ssl.ca.location") or "")
    if ca and ca != "probe":
        path = Path(ca)
        if path.is_dir():
            context = ssl.create_default_context(capath=ca)
        else:
            context = ssl.create_default_context(cafile=ca)
    elif config.get("ssl.ca.pem"):
        context = ssl.create_default_context(cadata=str(config["ssl.ca.pem"]))
    else:  # librdkafka's default: the system's CA store
        context = ssl.create_default_context()
    cert, key = config.get("ssl.certificate.location"), config.get("ssl.key.location")
    if cert and key:
        # Offered as librdkafka offers it, so a broker that requires one lets the handshake
        # finish; a key that cannot be loaded only makes the diagnosis less certain.
        with contextlib.suppress(OSError, ssl.SSLError, ValueError):
            context.load_cert_chain(str(cert), str(key), config.get("ssl.key.password"))
    return context


def _handshake(context: ssl.SSLContext, host: str, port: int) -> None:
    with (
        socket.create_connection((host.strip("[]"), port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host.strip("[]")),
    ):
        pass


def _address(text: str, config: Mapping[str, Any]) -> str:
    """The broker the error is about (`sasl_ssl://host:port/bootstrap: ...`), else the
    first bootstrap server."""
    if match := _BROKER_IN_ERROR.match(text):
        return f"{match.group('host')}:{match.group('port')}"
    first = str(config.get("bootstrap.servers", "")).split(",")[0].strip()
    return first.split("://", 1)[-1]


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port) if port.isdigit() else 0


def _reason(text: str) -> str:
    """librdkafka's text without the broker prefix and the `(after 5ms in state X)` tail."""
    text = _BROKER_IN_ERROR.sub("", text, count=1).strip()
    return re.sub(r"\s*\(after \d+ms in state [A-Z_]+\)\s*$", "", text)


def registry_problem(exc: BaseException, user_info: str | None) -> ConnectionProblem | None:
    """The cause behind a failed call to the schema registry, when it is one retrying cannot
    fix: refused credentials (401/403), or a certificate this client refused."""
    status = getattr(exc, "http_status_code", None)
    user = user_info.split(":", 1)[0] if user_info else None
    if status in (401, 403):
        whose = f" of user {user!r}" if user else " (none were given)"
        return ConnectionProblem(
            "authentication",
            f"the registry refused the credentials{whose} (HTTP {status})",
            "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO (`user:password`)",
            "",
        )
    verify = _cause_of_type(exc, ssl.SSLCertVerificationError)
    if verify is None:
        return None
    message = str(verify.verify_message or verify)
    if verify.verify_code in _HOSTNAME_MISMATCH:
        return ConnectionProblem(
            "TLS hostname verification",
            f"the registry's certificate is not valid for this URL's host ({message})",
            "that SCHEMA_REGISTRY_URL uses a name the registry's certificate carries",
            "",
        )
    return ConnectionProblem(
        "TLS trust",
        f"the registry's certificate is not signed by a CA this client trusts ({message})",
        "SCHEMA_REGISTRY_SSL_CA_LOCATION: the CA certificate that signed the registry's",
        "",
    )


#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
_HOSTNAME_MISMATCH = (62, 64)


def _cause_of_type(
    exc: BaseException, kind: type[ssl.SSLCertVerificationError]
) -> ssl.SSLCertVerificationError | None:
    """`exc` or the first exception of `kind` it was raised from (an HTTP library wraps the
    TLS error in its own)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
