"""What the Lambda functions ship, free of build litter, and a byte-stable zip of it.

Two archives reach Lambda, and a function is updated whenever its archive's hash changes:

- the code (the `replication` package): the program hands Pulumi exactly its source files
  (`package_files`), which Pulumi hashes by name and content. A directory archive would also carry
  `__pycache__` (written by whatever ran the code last, with the source's mtime inside) and editor
  leftovers, so every machine would deploy a different archive;
- the dependency layer `build/lambda-deps.zip` (scripts/build-lambda-deps.sh): Pulumi hashes a zip
  by its bytes, so `write_zip` writes it the same on every machine: entries sorted, one timestamp,
  fixed permissions, stored uncompressed (deflate output may differ between zlib builds), litter left
  out.

Standard library only: the build script runs it with any Python 3 (`python3 -m infra.lambda_archive
SRC_DIR OUT.zip`).
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping, Optional, Sequence

#: Directories and files no archive ships: bytecode, tool caches, editor and patch leftovers.
LITTER_DIRS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis", ".git"})
LITTER_NAMES = frozenset({".DS_Store", "Thumbs.db"})
LITTER_SUFFIXES = (".pyc", ".pyo", "~", ".swp", ".swo", ".orig", ".rej", ".tmp")
#: What the `replication` package needs at run time: its modules and the SQL it reads (replication.sql).
CODE_SUFFIXES = (".py", ".sql")
#: The earliest time a zip entry can carry (DOS dates start in 1980).
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o100644


def is_litter(rel: PurePosixPath) -> bool:
    return (any(part in LITTER_DIRS for part in rel.parts[:-1]) or rel.name in LITTER_NAMES
            or rel.name.endswith(LITTER_SUFFIXES))


def tree_files(root: Path, suffixes: Optional[Iterable[str]] = None) -> dict[str, Path]:
    """Every file under `root` that is not litter (and has one of `suffixes`, if given), by its
    POSIX path relative to `root`, in sorted order."""
    wanted = tuple(suffixes) if suffixes is not None else None
    found: dict[str, Path] = {}
    for path in root.rglob("*"):
        rel = PurePosixPath(path.relative_to(root).as_posix())
        if path.is_file() and not is_litter(rel) and (wanted is None or rel.name.endswith(wanted)):
            found[str(rel)] = path
    return dict(sorted(found.items()))


def package_files(package: Path) -> dict[str, Path]:
    """A Python package's shipped files, named as the function imports them (`replication/sql.py`)."""
    return {f"{package.name}/{rel}": path for rel, path in tree_files(package, CODE_SUFFIXES).items()}


def write_zip(files: Mapping[str, Path], out: Path) -> Path:
    """The same bytes for the same names and contents, whatever the files' times, modes or order."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(files):
            if is_litter(PurePosixPath(name)):
                continue
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.create_system = 3  # Unix, so the mode below is what unzip applies
            info.external_attr = FILE_MODE << 16
            info.compress_type = zipfile.ZIP_STORED
            zf.writestr(info, files[name].read_bytes())
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python3 -m infra.lambda_archive SRC_DIR OUT.zip", file=sys.stderr)
        return 2
    src, out = Path(args[0]), Path(args[1])
    files = tree_files(src)
    write_zip(files, out)
    print(f"wrote {out} ({len(files)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
