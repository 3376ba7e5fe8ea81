"""Probes from independent red-team passes (issue 19): each broke a safety claim on real PostgreSQL 18
before its fix and is kept as a regression test. Limits that were documented rather than fixed are
strict expected failures: if one starts passing, the limit is gone and the docs must say so."""
