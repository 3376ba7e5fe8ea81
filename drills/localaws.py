"""AWS as the fence agents see it, served on loopback: moto for Secrets Manager, CloudWatch and
ELBv2, and a small Route 53 ARC data plane (``ToggleCustomerAPI``), which moto does not have.

The agents run their real code with ``AWS_ENDPOINT_URL`` pointing here and the ARC endpoints
passed like the stack passes the cluster's. Each ARC endpoint can be taken down (connections
refused) or made to hang (accepted, never answered), as a dead routing-control endpoint would.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal, cast

import boto3

from drills.pg import free_port

if TYPE_CHECKING:
    from moto.cloudwatch.models import MetricDatum

__all__ = ["ArcEndpoint", "LocalAws", "RegionResources", "local_aws"]

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}
ACCOUNT = "123456789012"


class _ArcState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.controls: dict[str, str] = {}
        self.calls = 0


class ArcEndpoint:
    """One ARC cluster endpoint on loopback, sharing the controls' state with its siblings."""

    def __init__(self, state: _ArcState, region: str) -> None:
        self.state = state
        self.region = region
        self.port = free_port()
        self.mode: Literal["up", "down", "hang"] = "up"
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "ArcEndpoint":
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                if endpoint.mode == "hang":
                    endpoint._release.wait(30)
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                op = (self.headers.get("X-Amz-Target") or "").split(".")[-1]
                st = endpoint.state
                with st.lock:
                    st.calls += 1
                    arn = body.get("RoutingControlArn", "")
                    if op == "GetRoutingControlState":
                        out: dict[str, Any] = {"RoutingControlArn": arn,
                                               "RoutingControlState": st.controls.get(arn, "On")}
                    elif op == "UpdateRoutingControlState":
                        st.controls[arn] = body["RoutingControlState"]
                        out = {}
                    else:
                        self.send_response(400)
                        self.end_headers()
                        return
                data = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"arc-{self.port}", daemon=True)
        self._thread.start()
        return self

    def set_mode(self, mode: Literal["up", "down", "hang"]) -> None:
        """``down`` closes the listener (connection refused); ``hang`` accepts and never answers."""
        if mode == self.mode:
            return
        if self.mode == "hang":
            self._release.set()
            self._release = threading.Event()
        if mode == "down":
            self.stop()
        elif self.mode == "down":
            self.start()
        self.mode = mode

    def stop(self) -> None:
        if self._server is not None:
            self._release.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclass
class RegionResources:
    region: str
    db_secret_arn: str
    fence_rule_arn: str
    routing_control_arn: str


@dataclass
class LocalAws:
    port: int
    arc: list[ArcEndpoint]
    arc_state: _ArcState
    regions: dict[str, RegionResources] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What an agent process needs to reach this AWS."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def client(self, service: str, region: str) -> Any:
        return boto3.client(service, region_name=region, endpoint_url=self.endpoint,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def arc_endpoints(self) -> list[dict[str, str]]:
        return [{"region": e.region, "endpoint": e.url} for e in self.arc]

    def set_control(self, region: str, on: bool) -> None:
        with self.arc_state.lock:
            self.arc_state.controls[self.regions[region].routing_control_arn] = "On" if on else "Off"

    def fence_rule_path_matches(self, region: str) -> bool:
        """True when the region's fence rule answers the health path (region out of service)."""
        rule = self.client("elbv2", region).describe_rules(RuleArns=[self.regions[region].fence_rule_arn])["Rules"][0]
        return any(c.get("Field") == "path-pattern" for c in rule["Conditions"])

    def metric_values(self, region: str, namespace: str, name: str) -> list[float]:
        """Every datapoint the region's agent published under ``name`` (moto keeps them raw)."""
        from moto.backends import get_backend  # server mode shares this process's backends

        cw = get_backend("cloudwatch")[ACCOUNT][region]
        return [float(cast("MetricDatum", d).value) for d in cw.metric_data if d.namespace == namespace and d.name == name]


def _setup_region(aws: LocalAws, region: str, db_user: str) -> RegionResources:
    sm = aws.client("secretsmanager", region)
    secret = sm.create_secret(Name=f"rds!db-{region}", SecretString=json.dumps({"username": db_user, "password": "unused-trust-auth"}))
    ec2 = aws.client("ec2", region)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    azs = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]][:2]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=az)["Subnet"]["SubnetId"]
               for i, az in enumerate(azs)]
    elb = aws.client("elbv2", region)
    lb = elb.create_load_balancer(Name=f"fraiseql-{region}", Subnets=subnets)["LoadBalancers"][0]["LoadBalancerArn"]
    listener = elb.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=80, DefaultActions=[
        {"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}])["Listeners"][0]["ListenerArn"]
    rule = elb.create_rule(
        ListenerArn=listener, Priority=1,
        Conditions=[{"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": "x-fraiseql-fence", "Values": ["region-in-service"]}}],
        Actions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "503"}}],
    )["Rules"][0]["RuleArn"]
    control = f"arn:aws:route53-recovery-control::{ACCOUNT}:controlpanel/drill/routingcontrol/{region}"
    return RegionResources(region=region, db_secret_arn=secret["ARN"], fence_rule_arn=rule, routing_control_arn=control)


@contextlib.contextmanager
def local_aws(regions: Sequence[str], *, db_user: str = "postgres", arc_endpoints: int = 3) -> Iterator[LocalAws]:
    """moto on a loopback port plus ``arc_endpoints`` ARC endpoints; stopped on exit."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    state = _ArcState()
    arc = [ArcEndpoint(state, r).start() for r in ("us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1",
                                                    "ap-southeast-2")[:arc_endpoints]]
    aws = LocalAws(port=port, arc=arc, arc_state=state)
    try:
        with contextlib.closing(socket.create_connection(("127.0.0.1", port), timeout=5)):
            pass
        _reset(aws.endpoint)  # moto's backends live in this process: start from nothing
        for r in regions:
            aws.regions[r] = _setup_region(aws, r, db_user)
        yield aws
    finally:
        for e in arc:
            with contextlib.suppress(Exception):
                e.stop()
        with contextlib.suppress(Exception):
            _reset(aws.endpoint)
        server.stop()


def _reset(endpoint: str) -> None:
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10).read()
