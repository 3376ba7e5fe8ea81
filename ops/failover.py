"""Phase A failover: promote the warm standby in `standbyRegion` to be the writer.

Steps: preflight → fence → promote → redirect → verify. Every run first reads the state from AWS
(is the old primary fenced? is the standby still a replica? where does the writer CNAME point?) and
skips what is already done, so a run interrupted anywhere is resumed by running it again, and a run
after a completed failover changes nothing and exits "done".

Promotion cannot be undone, so the old primary is fenced first: its security groups are swapped for
an empty fence group, it is rebooted to end open connections, and the old region's service is
scaled to 0; each change is waited for. Two writers would be split brain, so a fence that cannot
be applied (API unreachable, instance in an unexpected state) refuses the failover unless --force.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Optional

from botocore.exceptions import ClientError

from ops import log
from ops.aws import (
    DbState,
    HealthState,
    Runtime,
    describe_db,
    health,
    read_cname,
    replica_lag,
    same_host,
    upsert_cname_change,
)
from ops.errors import Refused, StepFailed
from ops.outputs import PhaseAOutputs
from ops.retry import error_code, is_connection_error

STEPS = ("preflight", "fence", "promote", "redirect", "verify")
# What a replica reads while RDS promotes it (it still names its source until the end).
PROMOTING_STATUSES = frozenset({"modifying", "rebooting", "backing-up"})
WRITER_CNAME_TTL = 5
# The public API record is an alias to the ALB, whose answers carry a 60 s TTL (README, phase A).
PUBLIC_DNS_TTL_S = 60
PROBE_QUERY = "mutation RunbookWriteProbe { __typename }"

SPLIT_BRAIN = (
    "SPLIT-BRAIN RISK: if the old primary is still up and clients in its region can reach it, it keeps "
    "accepting writes that the promoted standby will never see; those writes would have to be reconciled "
    "by hand. Keep the old region's app scaled to zero or its traffic away, and re-run this runbook once "
    "its RDS API answers: the fence is applied then."
)


@dataclass(frozen=True)
class FailoverOptions:
    force: bool = False
    dry_run: bool = False
    promote_timeout_s: float = 1200.0
    lag_lookback_s: float = 300.0
    dns_grace_s: Optional[float] = None  # default: 2 × health-check interval × failure threshold
    verify_url: Optional[str] = None


@dataclass(frozen=True)
class State:
    primary: DbState
    standby: DbState
    cname: Optional[str]
    target: str
    primary_hc: HealthState
    standby_hc: HealthState
    fence_sg: str

    @property
    def fenced(self) -> bool:
        p = self.primary
        return p.reachable and p.exists and set(p.security_groups) == {self.fence_sg}

    @property
    def primary_gone(self) -> bool:
        return self.primary.reachable and not self.primary.exists

    @property
    def promoted(self) -> bool:
        return self.standby.exists and not self.standby.is_replica

    @property
    def promotion_underway(self) -> bool:
        """Fenced, and the standby is mid-promotion: an earlier run got past preflight and called promote."""
        return self.fenced and self.standby.is_replica and self.standby.status in PROMOTING_STATUSES

    @property
    def redirected(self) -> bool:
        return same_host(self.cname, self.target)

    @property
    def public_failed_over(self) -> bool:
        return self.standby_hc.healthy is True and self.primary_hc.healthy is False


class Failover:
    def __init__(self, outputs: PhaseAOutputs, rt: Runtime, opts: FailoverOptions):
        self.o = outputs
        self.rt = rt
        self.opts = opts
        assert rt.reporter is not None
        self.log = rt.reporter
        self.timeline: list[tuple[str, str, float]] = []

    # --- helpers -------------------------------------------------------------------------------

    def _emit(self, step: str, status: str, detail: str, /, **data: Any) -> None:
        self.log.emit(step, status, detail, **data)

    def _done(self, step: str, status: str, detail: str, /, **data: Any) -> None:
        self._emit(step, status, detail, **data)
        self.timeline.append((step, status, self.log.elapsed()))

    def _rds(self, region: str) -> Any:
        return self.rt.client("rds", region)

    def read_state(self) -> State:
        o = self.o
        primary = describe_db(self.rt, o.primaryRegion, o.primaryDbIdentifier)
        standby = describe_db(self.rt, o.standbyRegion, o.standby_db_identifier)
        if not standby.reachable:
            raise StepFailed(
                f"cannot reach the RDS API in {o.standbyRegion} ({standby.error}): the standby is the failover target, "
                "so nothing can be promoted; retry when the region answers",
                step="detect",
            )
        if not standby.exists:
            raise StepFailed(f"the standby {standby.identifier} does not exist in {o.standbyRegion}: nothing to promote", step="detect")
        target = standby.address or o.replicaDbAddresses[o.standbyRegion]
        if standby.address and not same_host(standby.address, o.replicaDbAddresses[o.standbyRegion]):
            self._emit("detect", log.WARN, f"RDS reports address {standby.address} but the outputs say {o.replicaDbAddresses[o.standbyRegion]}; using RDS's")
        return State(
            primary=primary,
            standby=standby,
            cname=read_cname(self.rt, o.dbPrivateZoneId, o.dbWriterHostname),
            target=target,
            primary_hc=health(self.rt, o.healthCheckIds[o.primaryRegion]),
            standby_hc=health(self.rt, o.healthCheckIds[o.standbyRegion]),
            fence_sg=o.fenceSecurityGroupIds[o.primaryRegion],
        )

    def _announce(self, subject: str, message: str) -> None:
        """Tell the on-call via the standby region's alert topic; never blocks the failover."""
        arn = self.o.alertTopicArns.get(self.o.standbyRegion)
        if not arn or self.opts.dry_run:
            return
        try:
            self.rt.client("sns", self.o.standbyRegion).publish(TopicArn=arn, Subject=subject[:100], Message=message)
        except Exception as e:  # noqa: BLE001 - a notification must not stop a failover
            self._emit("notify", log.WARN, f"could not publish to {arn}: {error_code(e) or e}")

    # --- the runbook ---------------------------------------------------------------------------

    def run(self) -> int:
        o = self.o
        self.log.text(
            f"failover {o.primaryRegion} → {o.standbyRegion}: RTO {o.slo.rtoSeconds:g} s, RPO {o.slo.rpoSeconds:g} s"
            + ("  [DRY RUN: nothing will be changed]" if self.opts.dry_run else "")
        )
        st = self.read_state()
        self._emit(
            "detect",
            log.INFO,
            f"primary {st.primary.brief()}; standby {st.standby.brief()}; writer CNAME {o.dbWriterHostname} → {st.cname}; "
            f"health checks: primary {st.primary_hc.brief()}, standby {st.standby_hc.brief()}",
            fenced=st.fenced,
            promoted=st.promoted,
            redirected=st.redirected,
            public_failed_over=st.public_failed_over,
        )

        done = {
            "fence": st.fenced or st.primary_gone,
            "promote": st.promoted and st.standby.available,
            "redirect": st.redirected and st.public_failed_over,
        }
        if all(done.values()):
            self._emit("failover", log.DONE, f"done: nothing to do, {o.standbyRegion} is already the writer ({st.standby.identifier}), "
                       f"fenced old primary, writer CNAME → {st.target}, public traffic on the standby")
            return 0
        finished = [s for s in ("fence", "promote", "redirect") if done[s]]
        if finished or st.promoted or st.promotion_underway:
            start = next(s for s in ("fence", "promote", "redirect", "verify") if not done.get(s, False))
            self._emit("resume", log.INFO, f"already done: {', '.join(finished) or 'nothing'}"
                       f"{' (promotion under way)' if st.promotion_underway else ''}; (re)starting at {start}", done=finished, start=start)

        self.preflight(st)
        if not (st.promoted or st.promotion_underway):
            self._announce(
                f"FraiseQL failover {o.primaryRegion} -> {o.standbyRegion} started",
                f"The failover runbook is promoting {st.standby.identifier} in {o.standbyRegion}. Started {self.rt.now().isoformat()}.",
            )
        fenced = self.fence(st)
        promoted = self.promote(st)
        self.redirect(st, fenced, promoted)
        self.verify(st, promoted)
        self.summary()
        if not self.opts.dry_run:
            self._announce(
                f"FraiseQL failover to {o.standbyRegion} complete",
                f"{st.standby.identifier} is the writer; {o.dbWriterHostname} points to {st.target}. Runbook time {self.log.elapsed():.1f} s.",
            )
        return 0

    def preflight(self, st: State) -> None:
        o = self.o
        if st.promoted or st.promotion_underway:
            self._done("preflight", log.SKIP, f"the standby is {'already promoted' if st.promoted else 'being promoted (' + str(st.standby.status) + ')'}: "
                       "an earlier run took the decision, so the preflight checks no longer apply")
            return
        problems: list[str] = []
        standby = st.standby
        if not standby.available:
            problems.append(f"the standby {standby.identifier} is {standby.status}, not available")
        if st.standby_hc.healthy is not True:
            problems.append(
                f"the standby's health check {st.standby_hc.health_check_id} is {st.standby_hc.brief()}: "
                "Route 53 would have nowhere healthy to send traffic"
            )
        lag = replica_lag(self.rt, o.standbyRegion, standby.identifier, self.opts.lag_lookback_s)
        rpo = o.slo.rpoSeconds
        if lag.seconds is None:
            problems.append(
                f"no ReplicaLag datapoint for {standby.identifier} in the last {self.opts.lag_lookback_s:g} s: "
                "replication may be broken, so the data loss is unknown"
            )
        elif lag.seconds > rpo:
            problems.append(f"replica lag {lag.seconds:g} s is over the RPO of {rpo:g} s: promoting now would lose up to {lag.seconds:g} s of writes")
        evidence = []
        if st.fenced:
            evidence.append("already fenced by an earlier run")
        if st.primary_hc.healthy is False:
            evidence.append(f"its health check {st.primary_hc.health_check_id} is unhealthy")
        if st.primary.reachable and st.primary.exists and not st.primary.available:
            evidence.append(f"RDS reports it {st.primary.status}")
        if st.primary_gone:
            evidence.append("RDS has no such instance")
        if not evidence:
            problems.append(
                f"the primary does not look failed: its health check is {st.primary_hc.brief()} and RDS says "
                + (f"{st.primary.status}" if st.primary.reachable else f"nothing (API unreachable: {st.primary.error})")
            )
        lag_text = "unknown" if lag.seconds is None else f"{lag.seconds:g} s"
        data = {"lag_s": lag.seconds, "rpo_s": rpo, "primary_evidence": evidence, "problems": problems}
        if problems:
            if not self.opts.force:
                self._done("preflight", log.REFUSED, "refusing to fail over: " + "; ".join(problems), **data)
                raise Refused(
                    "refused: " + "; ".join(problems) + ". Nothing was changed. See docs/runbooks.md (phase A refusals); "
                    "re-run with --force only once you have confirmed the failover is still the right call",
                    step="preflight",
                )
            self._done("preflight", log.WARN, "FORCED past: " + "; ".join(problems), **data)
            return
        self._done(
            "preflight",
            log.OK,
            f"standby {standby.identifier} available and healthy; lag {lag_text} ≤ RPO {rpo:g} s; primary failing ({', '.join(evidence)})",
            **data,
        )

    def _unfenced(self, message: str) -> bool:
        """A fence that cannot be confirmed: refused unless --force (then promoted with a warning)."""
        if not self.opts.force:
            self._done("fence", log.REFUSED, f"{message}: refusing to promote while the old primary may still accept writes")
            raise Refused(
                f"refused: {message}. Nothing was promoted. Re-run when the old primary's region answers (the fence is "
                "applied then), or re-run with --force to promote UNFENCED once you have stopped its writers yourself",
                step="fence",
            )
        self._done("fence", log.WARN, f"FORCED: {message}: continuing WITHOUT fencing. {SPLIT_BRAIN}")
        return False

    def fence(self, st: State) -> bool:
        """Stop the old primary taking writes, and wait for each change to be in effect.

        Swap its security groups for the empty fence group (new connections fail), reboot it (the
        connections already open go), and scale the old region's service to zero where its ECS API
        answers. A fence that cannot be applied is refused unless --force. Returns whether fenced.
        """
        p = st.primary
        region = self.o.primaryRegion
        if not p.reachable:
            return self._unfenced(f"cannot reach the RDS API in {region} ({p.error}) to fence {p.identifier}")
        if not p.exists:
            self._done("fence", log.SKIP, f"{p.identifier} no longer exists in {region}: nothing to fence")
            self._scale_old_region_to_zero()
            return True
        if st.fenced:
            self._done("fence", log.SKIP, f"{p.identifier} already fenced (security groups: {st.fence_sg})")
            self._scale_old_region_to_zero()
            return True
        if not p.available:
            return self._unfenced(f"{p.identifier} is {p.status}, a state RDS cannot fence it in")
        params = {"DBInstanceIdentifier": p.identifier, "VpcSecurityGroupIds": [st.fence_sg], "ApplyImmediately": True}
        if self.opts.dry_run:
            self._done("fence", log.WOULD, f"would call rds.modify_db_instance in {region}: {json.dumps(params)} "
                       f"(replacing {', '.join(p.security_groups) or 'no groups'}), wait for it, reboot {p.identifier} to "
                       "cut open connections, and scale the old region's service to 0", call="rds.modify_db_instance",
                       region=region, params=params)
            return True
        try:
            self._rds(region).modify_db_instance(**params)
            self._wait_fence_active(p.identifier, st.fence_sg)
            # Security groups stop new connections only; a reboot ends the ones already open.
            self._rds(region).reboot_db_instance(DBInstanceIdentifier=p.identifier)
            self._wait_available(region, p.identifier)
        except ClientError as e:
            code, msg = error_code(e), e.response.get("Error", {}).get("Message", "")
            if self.opts.force:
                self._done("fence", log.WARN, f"FORCED past a failed fence ({code}: {msg}). {SPLIT_BRAIN}")
                return False
            raise StepFailed(
                f"could not fence {p.identifier}: {code}: {msg}. Not promoting while the old primary may still accept writes. "
                "Fix the cause (IAM permission on rds:ModifyDBInstance or rds:RebootDBInstance? the fence group?) and re-run, "
                "or re-run with --force to promote unfenced",
                step="fence",
            ) from None
        except Exception as e:  # noqa: BLE001
            if not is_connection_error(e):
                raise
            return self._unfenced(f"lost the RDS API in {region} while fencing ({e})")
        self._scale_old_region_to_zero()
        self._done(
            "fence",
            log.OK,
            f"fenced {p.identifier}: security groups {', '.join(p.security_groups)} → {st.fence_sg} (active), rebooted to end "
            f"open connections; to restore later: VpcSecurityGroupIds={list(p.security_groups)}",
            previous_security_groups=list(p.security_groups),
        )
        return True

    def _wait_fence_active(self, identifier: str, fence_sg: str, timeout_s: float = 600.0) -> None:
        region = self.o.primaryRegion
        deadline, delay = self.rt.clock() + timeout_s, 2.0
        while True:
            db = self._rds(region).describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
            groups = {(g["VpcSecurityGroupId"], g.get("Status", "active")) for g in db.get("VpcSecurityGroups", [])}
            if groups == {(fence_sg, "active")}:
                return
            if self.rt.clock() > deadline:
                raise StepFailed(f"the fence group on {identifier} is not active after {timeout_s:g} s ({sorted(groups)}); "
                                 "re-run the runbook", step="fence")
            self.rt.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _wait_available(self, region: str, identifier: str, timeout_s: float = 900.0) -> None:
        deadline, delay = self.rt.clock() + timeout_s, 5.0
        while True:
            cur = describe_db(self.rt, region, identifier)
            if cur.available:
                return
            if self.rt.clock() > deadline:
                raise StepFailed(f"{identifier} is {cur.status} {timeout_s:g} s after its reboot; re-run the runbook", step="fence")
            self.rt.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _scale_old_region_to_zero(self, timeout_s: float = 300.0) -> None:
        """The old region's tasks stop: autoscaling may not bring them back, and none keeps running."""
        o, region = self.o, self.o.primaryRegion
        cluster, service = (o.clusterNames or {}).get(region), (o.serviceNames or {}).get(region)
        if not (cluster and service):
            self._emit("fence", log.WARN, f"the outputs name no ECS service in {region}: scale it to 0 by hand")
            return
        if self.opts.dry_run:
            return
        try:
            self.rt.client("application-autoscaling", region).register_scalable_target(
                ServiceNamespace="ecs", ResourceId=f"service/{cluster}/{service}", ScalableDimension="ecs:service:DesiredCount",
                MinCapacity=0, MaxCapacity=0)
            ecs = self.rt.client("ecs", region)
            ecs.update_service(cluster=cluster, service=service, desiredCount=0)
            deadline = self.rt.clock() + timeout_s
            while True:
                svc = ecs.describe_services(cluster=cluster, services=[service])["services"][0]
                if svc.get("runningCount", 0) == 0 and svc.get("desiredCount", 0) == 0:
                    break
                if self.rt.clock() > deadline:
                    self._emit("fence", log.WARN, f"{service} in {region} still runs {svc.get('runningCount')} task(s) after {timeout_s:g} s")
                    return
                self.rt.sleep(5.0)
        except Exception as e:  # noqa: BLE001 - the database fence holds without this; say so
            if not (is_connection_error(e) or isinstance(e, ClientError)):
                raise
            self._emit("fence", log.WARN, f"could not scale {service} in {region} to 0 ({error_code(e) or e}); the database "
                       "fence holds, but scale it down once the region answers")
            return
        self._emit("fence", log.INFO, f"scaled {service} in {region} to 0 tasks (autoscaling min/max 0); restore at failback")

    def promote(self, st: State) -> DbState:
        s = st.standby
        region = self.o.standbyRegion
        timeout = self.opts.promote_timeout_s
        if s.is_replica:
            if self.opts.dry_run and not s.available:
                self._done("promote", log.WOULD, f"{s.identifier} is {s.status}: would wait up to {timeout:g} s for a promotion under way to finish")
                return s
            if self.opts.dry_run:
                self._done("promote", log.WOULD, f"would call rds.promote_read_replica in {region}: "
                           f"{json.dumps({'DBInstanceIdentifier': s.identifier})}, then wait up to {timeout:g} s for it to be available and no longer a replica",
                           call="rds.promote_read_replica", region=region, params={"DBInstanceIdentifier": s.identifier})
                return s
            if s.available:
                self._emit("promote", log.START, f"promoting {s.identifier} (replica of {s.source}) in {region}")
                try:
                    self._rds(region).promote_read_replica(DBInstanceIdentifier=s.identifier)
                except ClientError as e:
                    if error_code(e) != "InvalidDBInstanceState":
                        raise
                    self._emit("promote", log.INFO, f"RDS cannot start a promotion now ({e.response['Error'].get('Message', '')}); "
                               "waiting in case one is already under way")
            else:
                self._emit("promote", log.INFO, f"{s.identifier} is {s.status} and still a replica: a promotion from an earlier run may be under way; waiting")
        elif s.available:
            self._done("promote", log.SKIP, f"{s.identifier} is already promoted: available, not a replica")
            return s
        else:
            if self.opts.dry_run:
                self._done("promote", log.WOULD, f"would wait up to {timeout:g} s for {s.identifier} ({s.status}) to be available")
                return s
            self._emit("promote", log.INFO, f"{s.identifier} is already promoted but {s.status}; waiting for available")
        final = self.wait_promoted(s.identifier, timeout)
        self._done("promote", log.OK, f"{final.identifier} is a writer now: available, not a replica, address {final.address}")
        return final

    def wait_promoted(self, identifier: str, timeout_s: float) -> DbState:
        """Poll with backoff (jittered, 2 s doubling to 30 s) until available and not a replica, or time out.

        Not the `db_instance_available` waiter: right after PromoteReadReplica the instance can still
        read `available` as a replica before it goes to `modifying`, and that waiter would stop there.
        """
        region = self.o.standbyRegion
        deadline = self.rt.clock() + timeout_s
        delay, polls, last = 2.0, 0, None
        while True:
            cur = describe_db(self.rt, region, identifier)
            polls += 1
            if not cur.reachable:
                state = f"API unreachable ({cur.error})"
            else:
                if cur.exists and cur.available and not cur.is_replica:
                    return cur
                state = f"{cur.status}, {'still a replica' if cur.is_replica else 'not a replica'}"
            if state != last:
                self._emit("promote", log.INFO, f"waiting: {identifier} {state} (poll {polls})", status=cur.status, replica=cur.is_replica)
                last = state
            remaining = deadline - self.rt.clock()
            if remaining <= 0:
                raise StepFailed(
                    f"timed out after {timeout_s:g} s waiting for {identifier} to finish promoting ({state}); "
                    "re-run the runbook to keep waiting: it resumes at this step",
                    step="promote",
                )
            self.rt.sleep(min(remaining, delay / 2 + self.rt.rng.uniform(0, delay / 2)))
            delay = min(delay * 2, 30.0)

    def redirect(self, st: State, fenced: bool, promoted: DbState) -> None:
        o = self.o
        target = promoted.address or st.target
        if same_host(st.cname, target):
            self._emit("redirect", log.SKIP, f"writer CNAME {o.dbWriterHostname} already → {target}")
        else:
            change = upsert_cname_change(o.dbPrivateZoneId, o.dbWriterHostname, target, WRITER_CNAME_TTL,
                                         f"failover runbook: writer → {promoted.identifier} ({o.standbyRegion})")
            if self.opts.dry_run:
                self._emit("redirect", log.WOULD, f"would UPSERT {o.dbWriterHostname} CNAME {st.cname} → {target} (TTL {WRITER_CNAME_TTL}) "
                           f"in private zone {o.dbPrivateZoneId}", call="route53.change_resource_record_sets", params=change)
            else:
                resp = self.rt.route53().change_resource_record_sets(**change)
                status = self._wait_insync(resp["ChangeInfo"])
                self._emit("redirect", log.OK, f"writer CNAME {o.dbWriterHostname} → {target} (was {st.cname}; TTL {WRITER_CNAME_TTL}; change {status})")
        self.public_failover(st, fenced)

    def _wait_insync(self, change_info: dict[str, Any], timeout_s: float = 60.0) -> str:
        status, change_id = change_info.get("Status", "PENDING"), change_info["Id"]
        deadline, delay = self.rt.clock() + timeout_s, 1.0
        while status != "INSYNC" and self.rt.clock() < deadline:
            self.rt.sleep(delay)
            delay = min(delay * 2, 10.0)
            status = self.rt.route53().get_change(Id=change_id)["ChangeInfo"]["Status"]
        return status

    def public_failover(self, st: State, fenced: bool) -> None:
        """Make sure Route 53 answers the API name with the standby (its SECONDARY failover record)."""
        o = self.o
        p_id, s_id = o.healthCheckIds[o.primaryRegion], o.healthCheckIds[o.standbyRegion]
        shc = health(self.rt, s_id)
        if shc.healthy is not True:
            self._emit("redirect", log.WARN, f"the standby's health check {s_id} is {shc.brief()}: Route 53 cannot fail {o.recordName} over to it yet")
        phc = health(self.rt, p_id)
        if phc.healthy is False:
            self._done("redirect", log.OK, f"public failover: the primary's check {p_id} is unhealthy, so Route 53 answers {o.recordName} with {o.standbyRegion}")
            return
        if phc.disabled:
            self._done("redirect", log.WARN, f"the primary's check {p_id} is disabled, and Route 53 treats a disabled check as healthy: "
                       f"enable it, or {o.recordName} keeps going to {o.primaryRegion}")
            return
        if phc.healthy is None:
            self._done("redirect", log.WARN, f"the primary's check {p_id} reports no observations; cannot tell where Route 53 sends {o.recordName}")
            return
        # Still healthy. A fenced primary's app loses its database, so its /health starts failing within
        # interval × threshold: wait for that first. Inverting a check whose endpoint is about to go down
        # would make it read healthy again and pull traffic back to the broken region.
        if fenced and not self.opts.dry_run:
            interval = phc.interval_s or 30
            threshold = phc.failure_threshold or 3
            grace = self.opts.dns_grace_s if self.opts.dns_grace_s is not None else 2.0 * interval * threshold
            self._emit("redirect", log.INFO, f"the primary's check {p_id} still reads healthy; the fence should fail it: waiting up to {grace:g} s")
            deadline = self.rt.clock() + grace
            while self.rt.clock() < deadline:
                self.rt.sleep(min(float(interval), max(0.0, deadline - self.rt.clock())))
                phc = health(self.rt, p_id)
                if phc.healthy is False:
                    self._done("redirect", log.OK, f"public failover: the primary's check {p_id} turned unhealthy; Route 53 answers {o.recordName} with {o.standbyRegion}")
                    return
        new_inverted = not phc.inverted
        why = ("its endpoint still answers although the database is fenced; does /health check the database?" if fenced
               else "the old primary is not fenced, so its region must not take traffic")
        if self.opts.dry_run:
            self._done("redirect", log.WOULD, f"the primary's check {p_id} is healthy: would wait for it to fail"
                       f"{' (fenced)' if fenced else ''}, then call route53.update_health_check(HealthCheckId={p_id}, Inverted={new_inverted}) "
                       f"so Route 53 fails {o.recordName} over", call="route53.update_health_check", params={"HealthCheckId": p_id, "Inverted": new_inverted})
            return
        self.rt.route53().update_health_check(HealthCheckId=p_id, Inverted=new_inverted)
        self._done(
            "redirect",
            log.WARN,
            f"the primary's check {p_id} was still healthy ({why}). Set Inverted={new_inverted} so Route 53 treats it as unhealthy "
            f"and answers {o.recordName} with {o.standbyRegion}. Revert it at failback: update_health_check(HealthCheckId={p_id}, Inverted={not new_inverted})",
            inverted=new_inverted,
        )

    def verify(self, st: State, promoted: DbState) -> None:
        o = self.o
        if self.opts.dry_run:
            self._done("verify", log.WOULD, f"would check: {promoted.identifier} available and not a replica, {o.dbWriterHostname} → it, "
                       f"the standby's check healthy, the primary's unhealthy" + (f", POST a probe to {self.opts.verify_url}" if self.opts.verify_url else ""))
            return
        problems = []
        cur = describe_db(self.rt, o.standbyRegion, promoted.identifier)
        if not (cur.available and not cur.is_replica):
            problems.append(f"{cur.identifier} is {cur.status}{', still a replica' if cur.is_replica else ''}")
        cname = read_cname(self.rt, o.dbPrivateZoneId, o.dbWriterHostname)
        if not same_host(cname, cur.address or st.target):
            problems.append(f"{o.dbWriterHostname} points to {cname}, not {cur.address or st.target}")
        shc = health(self.rt, o.healthCheckIds[o.standbyRegion])
        if shc.healthy is not True:
            problems.append(f"the standby's health check is {shc.brief()}")
        phc = health(self.rt, o.healthCheckIds[o.primaryRegion])
        if phc.healthy is True:
            problems.append(f"the primary's health check is healthy, so Route 53 still sends {o.recordName} to {o.primaryRegion}")
        if self.opts.verify_url and not problems:
            probe = self.probe(self.opts.verify_url)
            if probe:
                problems.append(probe)
        if problems:
            self._done("verify", log.FAILED, "; ".join(problems))
            raise StepFailed("verification failed: " + "; ".join(problems) + ". Re-run the runbook to retry the remaining steps", step="verify")
        self._done(
            "verify",
            log.OK,
            f"{cur.identifier} is the writer, {o.dbWriterHostname} → {cname}, the standby's check healthy, the primary's {phc.brief()}"
            + (f", write probe to {self.opts.verify_url} answered" if self.opts.verify_url else ""),
        )

    def probe(self, url: str) -> Optional[str]:
        """POST a GraphQL mutation through the public API; None when it answered without errors."""
        body = json.dumps({"query": PROBE_QUERY}).encode()
        req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
        try:
            with self.rt.urlopen(req, timeout=10) as resp:
                payload = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            return f"the write probe to {url} got HTTP {e.code}"
        except (urllib.error.URLError, OSError, ValueError) as e:
            return f"the write probe to {url} failed: {e}"
        if payload.get("errors"):
            return f"the write probe to {url} returned errors: {payload['errors']}"
        return None

    def summary(self) -> None:
        o = self.o
        total = self.log.elapsed()
        phc = health(self.rt, o.healthCheckIds[o.primaryRegion])
        interval, threshold = phc.interval_s or 30, phc.failure_threshold or 3
        detection = interval * threshold + PUBLIC_DNS_TTL_S
        estimate = detection + total
        rto = o.slo.rtoSeconds
        verdict = "within" if estimate <= rto else "OVER"
        self.log.text("timeline (runbook clock):")
        for step, status, at in self.timeline:
            self.log.text(f"  {step:<10} {status:<8} {at:8.1f} s")
        self.log.text(
            f"  runbook {total:.1f} s + detection ≈ {detection:g} s (health check {interval} s × {threshold} + {PUBLIC_DNS_TTL_S} s DNS TTL) "
            f"≈ {estimate:.1f} s: {verdict} the RTO of {rto:g} s"
        )
        self.log.emit(
            "timeline",
            log.DONE if not self.opts.dry_run else log.WOULD,
            f"runbook {total:.1f} s; with detection ≈ {estimate:.1f} s of RTO {rto:g} s ({verdict})",
            steps=[{"step": s, "status": st, "elapsed_s": round(t, 3)} for s, st, t in self.timeline],
            runbook_s=round(total, 3),
            detection_s=detection,
            estimated_total_s=round(estimate, 3),
            rto_s=rto,
            within_rto=estimate <= rto,
        )
        self.log.emit("failover", log.DONE if not self.opts.dry_run else log.WOULD,
                      "done: failover complete" if not self.opts.dry_run else "dry run complete: nothing was changed")


def run_failover(outputs: PhaseAOutputs, rt: Runtime, opts: FailoverOptions) -> int:
    return Failover(outputs, rt, opts).run()
