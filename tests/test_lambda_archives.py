"""Issue 20, item 18: the Lambda archives carry no build litter and are the same on every machine.

A function is updated whenever its archive's hash changes. Pulumi hashes the code archive by file
names and contents, and the layer (a .zip file) by its bytes: `__pycache__` (written by whoever ran
the code, with source mtimes inside), editor leftovers, or zip entries stamped with each build's
file times make every machine deploy a different archive.
"""

from __future__ import annotations

import hashlib
import os
import py_compile
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import pulumi
import pytest

from infra.lambda_archive import is_litter, package_files, write_zip
from infra.synth import REPO, synthesize

LITTER = ("__pycache__/sql.cpython-312.pyc", ".DS_Store", "agent.py~", "schema/.install.sql.swp")


def shipped(archive: Any, prefix: str = "") -> list[str]:
    """The entries an archive input expands to, as the engine would read them."""
    if isinstance(archive, pulumi.AssetArchive):
        out: list[str] = []
        for name, item in archive.assets.items():
            out += shipped(item, f"{prefix}{name}/") if isinstance(item, pulumi.Archive) else [f"{prefix}{name}"]
        return out
    if isinstance(archive, pulumi.FileArchive):
        path = Path(archive.path)
        if path.is_dir():
            return [prefix + p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        if path.suffix == ".zip" and path.exists():
            return [prefix + n for n in zipfile.ZipFile(path).namelist()]
        return []
    return []


def test_no_function_ships_bytecode_or_leftovers():
    # Python writes this whenever the package is imported; make sure it is there to be left out.
    py_compile.compile(str(REPO / "replication" / "sql.py"), doraise=True)
    assert list((REPO / "replication" / "__pycache__").glob("*.pyc"))
    syn = synthesize("phase-b")
    archives = [r.inputs["code"] for r in syn.resources if r.type in ("aws:lambda/function:Function", "aws:lambda/layerVersion:LayerVersion")]
    entries = [e for a in archives for e in shipped(a)]
    assert any(e.endswith("replication/bootstrap.py") for e in entries)
    assert any(e.endswith("replication/schema/install.sql") for e in entries)
    litter = sorted({e for e in entries if is_litter(PurePosixPath(e))})
    assert litter == [], litter


def _copy_with_litter(src: Path, dst: Path, *, reverse: bool, mtime: int, mode: int) -> Path:
    files = sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for p in reversed(files) if reverse else files:  # creation order differs between machines
        target = dst / p.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
        os.chmod(target, mode)
        os.utime(target, (mtime, mtime))
    for name in LITTER:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        (dst / name).write_bytes(os.urandom(16))
    return dst


def test_the_code_archive_is_the_same_on_every_machine(tmp_path):
    a = _copy_with_litter(REPO / "replication", tmp_path / "a" / "replication", reverse=False, mtime=1_700_000_000, mode=0o644)
    b = _copy_with_litter(REPO / "replication", tmp_path / "b" / "replication", reverse=True, mtime=1_800_000_000, mode=0o600)
    fa, fb = package_files(a), package_files(b)
    assert list(fa) == list(fb) and not any(is_litter(PurePosixPath(n)) for n in fa)
    assert [p.read_bytes() for p in fa.values()] == [p.read_bytes() for p in fb.values()]
    assert write_zip(fa, tmp_path / "a.zip").read_bytes() == write_zip(fb, tmp_path / "b.zip").read_bytes()


# --- the layer: scripts/build-lambda-deps.sh, with pip and the CA download replaced ----------------

FAKE_PIP = r'''#!{python}
import os, random, subprocess, sys
args = sys.argv[1:]
if args[:2] == ["-m", "pip"]:
    target = args[args.index("--target") + 1]
    compile_ = "--no-compile" not in args
    t = random.randint(1_600_000_000, 1_900_000_000)  # each build writes at its own time
    for rel, body in (("psycopg/__init__.py", b"VERSION = '3'\n"), ("psycopg/pq.py", b"x = 1\n"),
                      ("psycopg-3.3.9.dist-info/RECORD", b"psycopg/__init__.py,,\n")):
        path = os.path.join(target, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").write(body)
        os.utime(path, (t, t))
    if compile_:  # what pip does unless told not to
        os.makedirs(os.path.join(target, "psycopg", "__pycache__"), exist_ok=True)
        open(os.path.join(target, "psycopg", "__pycache__", "__init__.cpython-312.pyc"), "wb").write(os.urandom(32))
    sys.exit(0)
os.execv({python!r}, [{python!r}] + args)
'''
FAKE_CURL = r'''#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in -o) out="$2"; shift 2;; *) shift;; esac; done
printf -- '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' > "$out"
'''


def _build(tmp: Path, name: str) -> bytes:
    bin_dir = tmp / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        for tool, text in (("python3", FAKE_PIP.replace("{python!r}", repr(sys.executable)).replace("{python}", sys.executable)),
                           ("curl", FAKE_CURL)):
            (bin_dir / tool).write_text(text)
            (bin_dir / tool).chmod((bin_dir / tool).stat().st_mode | stat.S_IXUSR)
    build = tmp / name
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "BUILD_DIR": str(build)}
    subprocess.run(["bash", str(REPO / "scripts" / "build-lambda-deps.sh")], env=env, check=True, timeout=120,
                   capture_output=True)
    return (build / "lambda-deps.zip").read_bytes()


def test_the_layer_zip_is_byte_stable_and_has_no_bytecode(tmp_path):
    first, second = _build(tmp_path, "one"), _build(tmp_path, "two")
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()
    names = zipfile.ZipFile(tmp_path / "one" / "lambda-deps.zip").namelist()
    assert "python/psycopg/__init__.py" in names and "rds-ca/global-bundle.pem" in names
    assert not any(is_litter(PurePosixPath(n)) for n in names), names


@pytest.mark.parametrize("name", ["replication/__pycache__/x.pyc", "a/.DS_Store", "x.py~", "a/.mypy_cache/x", "x.pyo"])
def test_what_counts_as_litter(name):
    assert is_litter(PurePosixPath(name))
