"""The demo's committed per-file hashes: a built demo is checked against them, so a machine that builds other bytes
names the first file that differs instead of only a different ``dvc.lock`` folder hash.

    python -m pipeline.demo.expected check data/demo   # compare with expected_md5.txt; exit 1 at the first difference
    python -m pipeline.demo.expected write data/demo   # record a new list (only when the demo's code or params change)
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Collection
from pathlib import Path

from pipeline.manifest import atomic_path

__all__ = ["EXPECTED_FILE", "hashes", "read", "write", "first_difference"]

#: md5 and path (relative to the demo folder) of every file that ``python -m stages.demo`` writes with params.yaml.
EXPECTED_FILE = Path(__file__).with_name("expected_md5.txt")


def hashes(folder: Path, ignore: Collection[str] = ()) -> dict[str, str]:
    """``{relative path: md5}`` of every file under ``folder`` (POSIX paths), leaving out the ``ignore`` paths."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel not in ignore:
            out[rel] = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()  # the hash DVC records
    return out


def read(listing: Path) -> dict[str, str]:
    """A hash list (``md5  path`` per line, ``#`` comments) as ``{path: md5}``; a malformed line is one ValueError."""
    out = {}
    for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        md5, _, rel = line.partition("  ")
        if len(md5) != 32 or not rel:
            raise ValueError(f"{listing}:{number}: expected '<md5>  <path>', got {line!r}")
        out[rel] = md5
    return out


def write(folder: Path, listing: Path, header: str, ignore: Collection[str] = ()) -> int:
    """Record the hashes of ``folder`` in ``listing`` under a ``#`` header; returns the number of files."""
    found = hashes(folder, ignore)
    lines = [f"# {text}" for text in header.splitlines()] + [f"{md5}  {rel}" for rel, md5 in found.items()]
    with atomic_path(listing) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(found)


def first_difference(folder: Path, listing: Path, ignore: Collection[str] = ()) -> str | None:
    """The first file (in path order) that is missing, unlisted or other than ``listing`` says, as one line naming it;
    ``None`` when every file matches. ``ignore`` paths are left out on both sides."""
    expected = {rel: md5 for rel, md5 in read(listing).items() if rel not in ignore}
    found = hashes(folder, ignore)
    for rel in sorted(set(expected) | set(found)):
        if rel not in found:
            return f"{folder / rel}: missing (listed in {listing})"
        if rel not in expected:
            return f"{folder / rel}: not listed in {listing}"
        if found[rel] != expected[rel]:
            return f"{folder / rel}: md5 {found[rel]}, {listing} expects {expected[rel]}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("check", "write"))
    parser.add_argument("folder", type=Path, help="a built demo (python -m stages.demo --out FOLDER)")
    parser.add_argument("--list", type=Path, default=EXPECTED_FILE, help="hash list (default: %(default)s)")
    parser.add_argument("--ignore", action="append", default=[], help="a relative path to leave out (repeatable)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder}: not a folder", file=sys.stderr)
        return 2
    if args.action == "write":
        header = f"per-file md5 of a demo build: python -m pipeline.demo.expected write DIR --list {args.list}"
        header += "".join(f" --ignore {rel}" for rel in args.ignore)
        count = write(args.folder, args.list, header, args.ignore)
        print(f"{args.list}: {count} files")
        return 0
    try:
        problem = first_difference(args.folder, args.list, args.ignore)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if problem is not None:
        print(f"differs: {problem}", file=sys.stderr)
        return 1
    print(f"{args.folder}: every file matches {args.list}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
