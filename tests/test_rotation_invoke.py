"""Issue 20, item 14: the rotation function waits for each bootstrap step as long as the step may run.

A bootstrap step can wait 180 s for its region's copy of the secret; boto3 reads for 60 s by default
and then retries, which would run the same step again while the first run still works. The function
reads for longer than the bootstrap functions' timeout (which the stack passes it) and retries nothing.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from replication.redact import SecretBox
from replication.rotation import lambda_invoker

FUNCTION = "aws:lambda/function:Function"
#: replication.bootstrap._replication_password's default wait for a replica's copy of a secret.
STEP_WAIT_S = 180


def bootstrap_and_rotation(syn) -> tuple[list, Any]:
    fns = syn.of_type(FUNCTION)
    return ([f for f in fns if f.inputs["handler"] == "replication.bootstrap.handler"],
            next(f for f in fns if f.inputs["handler"] == "replication.rotation.handler"))


def test_the_stack_tells_the_rotation_function_how_long_a_step_may_run(phase_b):
    bootstraps, rotation = bootstrap_and_rotation(phase_b)
    env = rotation.inputs["environment"]["variables"]
    invoked = set(json.loads(env["FRAISEQL_BOOTSTRAP_FUNCTIONS"]).values())
    timeouts = {f.inputs["timeout"] for f in bootstraps if f.outputs["arn"] in invoked}
    assert timeouts and float(env["FRAISEQL_BOOTSTRAP_TIMEOUT_SECONDS"]) == max(timeouts) > STEP_WAIT_S
    # every step of a rotation fits the rotation function's own timeout at least once per region
    assert rotation.inputs["timeout"] >= max(timeouts)


class _Unavailable(BaseHTTPRequestHandler):
    requests = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        type(self).requests += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"Type":"Service","message":"try again"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-amzn-ErrorType", "ServiceException")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_step_is_sent_once_and_read_for_longer_than_it_may_run(phase_b):
    bootstraps, rotation = bootstrap_and_rotation(phase_b)
    timeout = float(rotation.inputs["environment"]["variables"]["FRAISEQL_BOOTSTRAP_TIMEOUT_SECONDS"])
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    made = []

    def client(service: str, **kwargs: Any) -> Any:
        c = boto3.client(service, endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
                         aws_access_key_id="testing", aws_secret_access_key="testing", **kwargs)
        made.append(c)
        return c

    try:
        invoke = lambda_invoker({"us-east-1": "bootstrap-us-east-1"}, client, SecretBox(), timeout)
        with pytest.raises(ClientError):
            invoke("us-east-1", "set_password", "v1")
    finally:
        server.shutdown()
    assert _Unavailable.requests == 1, "a retry would run the step a second time"
    config = made[0].meta.config
    assert config.read_timeout > timeout > STEP_WAIT_S
