"""Issue 13, item 2: in phase C the origin answers only the edge.

Two independent locks, each checked on what the program declares under mocks: the ALB security
groups admit Cloudflare's published ranges only (kept in infra/cloudflare-ips.json, refreshed by a
command tested here with a stub), and the listener forwards only requests carrying the secret
origin header; everything else gets 403.
"""

from __future__ import annotations

import io
import json

import pytest

from infra import cloudflare_ips
from infra.synth import SECRET_PLACEHOLDER

REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
SECRET_SIG = "4dabf18193072939515e22adb298388d"


def unwrap(v):
    return v["value"] if isinstance(v, dict) and SECRET_SIG in v else v


def _alb_ingress(syn, region):
    sg = next(r for r in syn.of_type("aws:ec2/securityGroup:SecurityGroup") if r.name == f"fraiseql-{region}-sg-alb")
    return [r for r in syn.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
            if r.property_dependencies.get("securityGroupId") == [sg.urn]]


@pytest.mark.parametrize("region", REGIONS)
def test_alb_admits_only_cloudflare_ranges_in_phase_c(phase_c, region):
    rules = _alb_ingress(phase_c, region)
    assert sorted(r.inputs["fromPort"] for r in rules) == [80, 443]
    plist = next(r for r in phase_c.of_type("aws:ec2/managedPrefixList:ManagedPrefixList") if r.region == region)
    for rule in rules:
        assert "cidrIpv4" not in rule.inputs and "cidrIpv6" not in rule.inputs
        assert rule.property_dependencies["prefixListId"] == [plist.urn]
    assert sorted(e["cidr"] for e in plist.inputs["entries"]) == sorted(cloudflare_ips.load().ipv4)
    # every security-group rule counts the list's max entries against the 60-rule quota
    assert plist.inputs["maxEntries"] * len(rules) <= 60


def test_phase_b_alb_still_faces_the_internet(phase_b):
    assert {r.inputs.get("cidrIpv4") for r in _alb_ingress(phase_b, "us-east-1")} == {"0.0.0.0/0"}
    assert phase_b.of_type("aws:ec2/managedPrefixList:ManagedPrefixList") == []


@pytest.mark.parametrize("region", REGIONS)
def test_listener_forwards_only_with_the_origin_token(phase_c, region):
    listener = next(r for r in phase_c.of_type("aws:lb/listener:Listener")
                    if r.region == region and r.inputs["port"] == 443)
    (default,) = listener.inputs["defaultActions"]
    assert default["type"] == "fixed-response" and default["fixedResponse"]["statusCode"] == "403"
    rules = [r for r in phase_c.of_type("aws:lb/listenerRule:ListenerRule")
             if r.property_dependencies.get("listenerArn") == [listener.urn]]
    forwards = [r for r in rules if any(a["type"] == "forward" for a in r.inputs["actions"])]
    assert len(forwards) == 1, [r.name for r in rules]
    (cond,) = unwrap(forwards[0].inputs["conditions"])
    header = cond["httpHeader"]
    assert header["httpHeaderName"] == "x-fraiseql-origin-auth"
    assert header["values"] == [SECRET_PLACEHOLDER]  # the stack's secret config value, nothing else
    # the fence rule still comes first, so a fenced region's health path answers 503
    fence = next(r for r in rules if r.name.startswith("fraiseql-quorum-fence-rule"))
    assert fence.inputs["priority"] < forwards[0].inputs["priority"]


def test_route53_no_longer_probes_locked_origins(phase_c):
    probes = [h for h in phase_c.of_type("aws:route53/healthCheck:HealthCheck") if h.inputs.get("type") in ("HTTP", "HTTPS")]
    assert probes == []
    records = [r for r in phase_c.of_type("aws:route53/record:Record") if r.inputs.get("latencyRoutingPolicies")]
    assert len(records) == 3 and all(r.inputs.get("healthCheckId") for r in records)


def test_a_weak_token_is_refused_without_echoing_it():
    from components.region_stack import check_origin_token

    with pytest.raises(ValueError) as info:
        check_origin_token("short*wildcard")
    assert "short*wildcard" not in str(info.value) and "openssl rand" in str(info.value)
    assert check_origin_token("a" * 44) == "a" * 44


# --- the data file and its refresh command (Cloudflare's API is never called here) ------------------

class _Resp(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _stub(v4, v6=("2400:cb00::/32",), success=True):
    calls = []

    def urlopen(req, timeout):
        calls.append(req.full_url)
        return _Resp(json.dumps({"success": success, "errors": [],
                                 "result": {"ipv4_cidrs": list(v4), "ipv6_cidrs": list(v6)}}).encode())

    return urlopen, calls


def test_refresh_reports_and_writes_changes(tmp_path):
    path = tmp_path / "cloudflare-ips.json"
    path.write_text(cloudflare_ips.DATA.read_text())
    current = cloudflare_ips.load(path)
    new_v4 = [*current.ipv4[1:], "198.51.100.0/22"]
    urlopen, calls = _stub(new_v4, current.ipv6)
    changed, report = cloudflare_ips.refresh(write=False, path=path, urlopen=urlopen)
    assert calls == [cloudflare_ips.API]
    assert changed and "+ 198.51.100.0/22" in report and f"- {current.ipv4[0]}" in report and "--write" in report
    assert cloudflare_ips.load(path) == current  # not written without --write
    changed, _ = cloudflare_ips.refresh(write=True, path=path, urlopen=urlopen)
    assert cloudflare_ips.load(path).ipv4 == tuple(new_v4)
    changed, report = cloudflare_ips.refresh(write=False, path=path, urlopen=urlopen)
    assert not changed and "up to date" in report


@pytest.mark.parametrize("v4, success", [(["104.16.0.0/13"], True), (["0.0.0.0/0"] * 6, True), (["104.16.0.0/13"] * 6, False)])
def test_refresh_refuses_an_answer_that_would_open_or_close_the_origin(tmp_path, v4, success):
    path = tmp_path / "cloudflare-ips.json"
    path.write_text(cloudflare_ips.DATA.read_text())
    before = path.read_text()
    urlopen, _ = _stub(v4, success=success)
    with pytest.raises(cloudflare_ips.RangesError):
        cloudflare_ips.refresh(write=True, path=path, urlopen=urlopen)
    assert path.read_text() == before


def test_cli_exits_nonzero_when_the_file_is_stale(monkeypatch, capsys):
    from infra import __main__ as cli

    monkeypatch.setattr(cloudflare_ips.urllib.request, "urlopen", _stub(["198.51.100.0/22"] * 6)[0])
    assert cli.main(["cloudflare-ips"]) == 1
    assert "changed" in capsys.readouterr().out
