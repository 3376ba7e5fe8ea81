"""Failure drills for the FraiseQL data tier, run against real local PostgreSQL.

``drills.pg`` starts throw-away PostgreSQL servers, ``drills.proxy`` stands in
for inter-region links (delay, partition), ``drills.phase_a`` and
``drills.phase_b`` measure the two architecture phases, and ``python -m drills``
prints the report table.
"""
