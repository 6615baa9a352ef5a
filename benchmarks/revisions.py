"""Revisions: generated modules as committed at a git revision (the benchmarks' --baseline-rev),
and the revision a result was measured at, also where the checkout has no .git.

    python benchmarks/revisions.py DIGEST [--rev REV] [--max-count N]
        # the commits (of REV's history, newest first) whose source digest is DIGEST

A result records `source_digest`: sha256 over one line "PATH BLOB\\n" per file of DIGESTED,
sorted by path, BLOB being the file's git blob id (sha1 of "blob LEN\\0" + its bytes). The
same lines come from `git ls-tree` at any commit without reading a file, so the digest of a
copy of the tree with no .git (a lent GPU machine's) names the commits it matches.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIGESTED = ("padre_compiler", "codegen", "benchmarks")  # the folders whose *.py files count


def source_at(rev: str, spec: str, tmp: Path) -> Path:
    """codegen/triton/<spec>.py as committed at `rev`, written to `tmp` as <spec>_<rev>.py."""
    rel = f"codegen/triton/{spec}.py"
    text = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout
    path = tmp / f"{spec}_{rev}.py"
    path.write_text(text)
    return path


def blob_id(data: bytes) -> str:
    """The id git gives a file of these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def digest(files: Iterable[tuple[str, str]]) -> str:
    """sha256 of the (path, blob id) pairs, sorted by path, one "PATH BLOB" line each."""
    lines = "".join(f"{path} {blob}\n" for path, blob in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def source_digest(root: Path = ROOT) -> str:
    """The digest of the *.py files of DIGESTED in the tree at `root`, as it is on disk."""
    return digest((path.relative_to(root).as_posix(), blob_id(path.read_bytes()))
                  for folder in DIGESTED for path in (root / folder).rglob("*.py"))


def digest_at(rev: str, root: Path = ROOT) -> str:
    """The digest of the same files as committed at `rev` (git ls-tree: no file is read)."""
    listing = subprocess.run(["git", "ls-tree", "-r", "--full-tree", rev, "--", *DIGESTED],
                             cwd=root, capture_output=True, text=True, check=True).stdout
    files = []
    for line in listing.splitlines():  # "MODE blob BLOB\tPATH"
        info, path = line.split("\t", 1)
        if info.split()[1] == "blob" and path.endswith(".py"):
            files.append((path, info.split()[2]))
    return digest(files)


def git_revision(root: Path = ROOT) -> str | None:
    """HEAD's commit, with "+changes" where tracked files differ from it; None where `root`
    is no git checkout (or git is missing)."""
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=root,
                                 capture_output=True).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if changed else "")


def revision_meta(root: Path = ROOT) -> dict[str, str | None]:
    """What a result records of the revision it was measured at."""
    return {"source_digest": source_digest(root), "git_revision": git_revision(root)}


def revision_line(meta: dict) -> str:
    """One markdown line naming a result's revision (revision_meta's fields in `meta`)."""
    git = meta.get("git_revision") or "no .git"
    return (f"Source digest `{meta.get('source_digest', '-')}` (git {git}; "
            "`python benchmarks/revisions.py DIGEST` finds its commits).")


def find_commits(wanted: str, rev: str = "HEAD", max_count: int = 500,
                 root: Path = ROOT) -> list[str]:
    """The commits among the last `max_count` of `rev`'s history whose digest is `wanted`."""
    commits = subprocess.run(["git", "rev-list", f"--max-count={max_count}", rev], cwd=root,
                             capture_output=True, text=True, check=True).stdout.split()
    return [commit for commit in commits if digest_at(commit, root) == wanted]


def main() -> int:
    ap = argparse.ArgumentParser(description="the commits whose source digest is DIGEST")
    ap.add_argument("digest", help="a result's source_digest")
    ap.add_argument("--rev", default="HEAD", help="whose history to search (default HEAD)")
    ap.add_argument("--max-count", type=int, default=500, help="commits to search")
    args = ap.parse_args()
    found = find_commits(args.digest, args.rev, args.max_count)
    print("\n".join(found) if found else f"no commit of the last {args.max_count} of "
          f"{args.rev} has source digest {args.digest}")
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
