"""The fence agent: one per region, the only process that lets its writer take writes.

Every ``probe_s`` seconds, on one autocommit connection to its own writer, it

1. observes, in one statement and at one moment of its writer's clock, the heartbeat rows its writer
   has received on the control channel; then the health of its data subscriptions (apply worker
   running, no new apply error);
2. merges every region's newest report into its own view and decides (``replication.quorum.assess``)
   with its routing control and the hysteresis state kept in the database
   (``fraiseql_repl.agent_state``);
3. in one message (one implicit transaction): records its state, publishes its own heartbeat (whom
   it hears, and what it knows of everyone else, for the relays, stamped with the moment of
   observation) and renews the write lease until ``lease_s`` after that moment, or revokes it;
4. when fenced, ends every transaction that has written to a replicated table and not committed
   (``fraiseql_repl.end_writes``): the guard that needs no cooperation from the writer.

Writes are allowed only while the lease is valid (``fraiseql_repl.check_lease``, at statement start
and again at commit), so an agent that stops for any reason fences its region within ``lease_s``:
the fence fails closed. Everything that talks to AWS (routing control, metrics, taking the region
out of the traffic path) runs on a side thread with short timeouts and never delays the lease; so
do the verify rounds and the housekeeping, each on a connection of its own: nothing but the probe
runs between two heartbeats.

``handler`` is the Lambda entry. Invocations hand over through a PostgreSQL advisory lock: one loop
at a time per writer, the next invocation waits for the current one only near its deadline.
``python -m replication.agent`` runs the same handler in a loop, as the scheduler would (drills).

The modules, each one job, imports pointing one way (down this list):

- ``settings``: what the agent runs with, and the environment it travels in (the stack writes it);
- ``memory``: what one probe leaves the next (``agent_state.apply_errors``);
- ``probing``: one probe (observe, judge the data links, decide, commit);
- ``maintenance``: housekeeping (parked changes retried, tombstones and the change log purged);
- ``aws_side``: routing control, the traffic path and metrics, on their own thread;
- ``side_connection``: the connection of a side thread, which an invocation's end cancels;
- ``verify_side``: digest rounds, on their own thread and connection;
- ``maintenance_side``: the housekeeping, on its own thread and connection;
- ``loop``: the lease loop and the hand-over between invocations;
- ``entry``: the Lambda ``handler`` and ``main``.
"""

from __future__ import annotations

from replication.agent.aws_side import AwsSide
from replication.agent.entry import LocalContext, handler, main
from replication.agent.loop import LOCK_SQL, acquire_loop, hand_over, newer_configuration_waiting, run_loop
from replication.agent.maintenance import Maintenance, maintain
from replication.agent.maintenance_side import MaintenanceSide
from replication.agent.memory import AgentMemory, LinkMemory
from replication.agent.probing import LinkHealth, ProbeResult, probe
from replication.agent.settings import Settings
from replication.agent.verify_side import VerifySide

__all__ = [
    "LOCK_SQL",
    "AgentMemory",
    "AwsSide",
    "LinkHealth",
    "LinkMemory",
    "LocalContext",
    "Maintenance",
    "MaintenanceSide",
    "ProbeResult",
    "Settings",
    "VerifySide",
    "acquire_loop",
    "hand_over",
    "handler",
    "main",
    "maintain",
    "newer_configuration_waiting",
    "probe",
    "run_loop",
]
