"""The chart's webhook receiver: Service port, optional Ingress, the signing secret from the
chart's Secret or an existingSecret, reconciliation settings and the NetworkPolicy rule."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.deploy.conftest import Helm
from tests.deploy.test_helm_chart import CI_FILE, FULLNAME, WITH_KEY, merge, secret_ref

pytestmark = pytest.mark.unit

SECRET = "whsec_dGVzdC1ub3QtYS1yZWFsLXNlY3JldA=="


def with_webhooks(**webhooks: Any) -> dict[str, Any]:
    return merge(WITH_KEY, {"webhooks": {"enabled": True, **webhooks}})


def test_off_by_default(helm: Helm) -> None:
    rendered = helm.template(values=WITH_KEY)
    assert "WEBHOOK_PORT" not in rendered.one("ConfigMap")["data"]
    assert rendered.one("ConfigMap")["data"]["RECONCILE_INTERVAL_SECONDS"] == "0"
    assert "ASKELEPHANT_WEBHOOK_SECRET" not in rendered.env()
    assert rendered.maybe("Ingress") is None


def test_the_receiver_gets_a_port_a_service_and_the_secret(helm: Helm) -> None:
    rendered = helm.template(values=with_webhooks(secret=SECRET, port=8099))
    data = rendered.one("ConfigMap")["data"]
    assert (data["WEBHOOK_PORT"], data["WEBHOOK_REALTIME"]) == ("8099", "false")
    secret = rendered.one("Secret")
    assert base64.b64decode(secret["data"]["webhook-secret"]).decode() == SECRET
    assert secret_ref(rendered.env()["ASKELEPHANT_WEBHOOK_SECRET"]) == (FULLNAME, "webhook-secret")
    assert SECRET not in rendered.text  # only base64 in the Secret
    service = rendered.one("Service", "-webhooks")
    assert service["spec"]["ports"] == [
        {"name": "webhooks", "port": 8090, "targetPort": "webhooks", "protocol": "TCP"}
    ]
    [container] = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert {"name": "webhooks", "containerPort": 8099, "protocol": "TCP"} in container["ports"]


def test_the_secret_from_an_existing_secret(helm: Helm) -> None:
    rendered = helm.template([CI_FILE["existing-secret"]])
    env = rendered.env()
    assert secret_ref(env["ASKELEPHANT_WEBHOOK_SECRET"]) == (
        "askelephant-webhooks",
        "webhook-secret",
    )


def test_no_secret_is_refused(helm: Helm) -> None:
    message = helm.template_error(values=with_webhooks())
    assert "webhooks.secret" in message


def test_the_ingress_exposes_only_the_receiver_path(helm: Helm) -> None:
    rendered = helm.template([CI_FILE["all-features"]])
    ingress = rendered.one("Ingress")
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "hooks.example.com"
    [path] = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/webhooks/askelephant", "Exact")
    assert path["backend"]["service"]["name"] == f"{FULLNAME}-webhooks"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    settings = rendered.one("ConfigMap", "-askelephant-kafka")["data"]
    assert settings["RECONCILE_INTERVAL_SECONDS"] == "0,users=3600"
    policy = rendered.one("NetworkPolicy")["spec"]
    webhook_rule = next(r for r in policy["ingress"] if r["ports"][0]["port"] == "webhooks")
    assert webhook_rule["from"][0]["namespaceSelector"]
