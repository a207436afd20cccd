#!/usr/bin/env python3
"""Builds the sandbox engine's evaluation set from eval/sources.toml.

Each source is a public git repository pinned to a commit. The script finds the repository in a
mirror folder (`<root>/<owner>+<name>/repo`, a bare git directory) or clones it, exports every
selected skill folder at the pinned commit into the cache (~/.cache/sigma/eval/skills/<id>), and
writes eval/labels.csv: one row per skill with its label, split and provenance.

The split is fixed once, by a salted hash of the skill's id: half the skills are the development
part (rules may be tuned on it) and half the held-out part (measured, never read while tuning).
Standard library only.

    python3 eval/build.py [--mirror-root /work/.mirror] [--out ~/.cache/sigma/eval]
"""

import argparse
import csv
import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Of five salts tried before any scan ran, the first whose two parts each hold a fair share of
# every malicious source (the split looks at labels and groups only, never at scan results).
SPLIT_SALT = "sigma-eval-split-v5"
# Skills are small; a folder past these is not a skill a registry would serve and is skipped (and
# counted) rather than exported.
MAX_SKILL_FILES = 2000


def split_of(group: str) -> str:
    digest = hashlib.sha256(f"{SPLIT_SALT}:{group}".encode()).digest()
    return "heldout" if digest[0] % 2 else "dev"


def group_of(source: dict, sid: str, note: str) -> str:
    """Skills made from one template or by one campaign account fall on the same side of the
    split, so the held-out part holds attack kinds and publishers the rules were never tuned on."""
    pattern = source.get("group_pattern")
    if pattern:
        found = re.search(pattern, note)
        if found:
            return f"{source['name']}:{found.group(1)}"
    return sid


def git(gitdir: Path, *args: str, input_bytes: bytes | None = None) -> bytes:
    done = subprocess.run(
        ["git", "--git-dir", str(gitdir), *args],
        input=input_bytes,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {gitdir}: {done.stderr.decode(errors='replace')}")
    return done.stdout


def locate_repo(repo: str, commit: str, mirror_root: Path, cache: Path) -> Path:
    owner, name = repo.split("/")
    mirrored = mirror_root / f"{owner}+{name}" / "repo"
    if (mirrored / "HEAD").exists() or (mirrored / ".git").exists():
        gitdir = mirrored / ".git" if (mirrored / ".git").exists() else mirrored
    else:
        gitdir = cache / "git" / f"{owner}+{name}.git"
        if not gitdir.exists():
            gitdir.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["git", "clone", "--bare", "--filter=blob:limit=4m", f"https://github.com/{repo}.git", str(gitdir)],
                check=True,
            )
    git(gitdir, "cat-file", "-e", f"{commit}^{{commit}}")
    return gitdir


def tree_files(gitdir: Path, commit: str) -> list[tuple[str, str, int]]:
    """(path, blob id, size) of every file at the commit; links and submodules are left out."""
    out = git(gitdir, "ls-tree", "-r", "-z", "--long", commit)
    files = []
    for entry in out.split(b"\0"):
        if not entry:
            continue
        meta, path = entry.split(b"\t", 1)
        mode, kind, oid, size = meta.split()
        if kind != b"blob" or mode == b"120000":
            continue
        # A blob the snapshot lacks has no size ("BAD"); it is read (and counted) as absent later.
        files.append((path.decode("utf-8", "surrogateescape"), oid.decode(), int(size) if size.isdigit() else -1))
    return files


class BlobReader:
    """One `git cat-file --batch` per repository; a blob the snapshot lacks reads as None."""

    def __init__(self, gitdir: Path):
        self.proc = subprocess.Popen(
            ["git", "--git-dir", str(gitdir), "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def read(self, oid: str) -> bytes | None:
        self.proc.stdin.write(oid.encode() + b"\n")
        self.proc.stdin.flush()
        header = self.proc.stdout.readline().split()
        if len(header) < 3 or header[1] == b"missing":
            return None
        size = int(header[2])
        data = self.proc.stdout.read(size)
        self.proc.stdout.read(1)
        return data

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def skill_dirs(files, under: list[str]) -> list[str]:
    dirs = sorted(
        {posixpath.dirname(p) for p, _, _ in files if posixpath.basename(p) == "SKILL.md"}
    )
    if under:
        dirs = [d for d in dirs if any((d + "/").startswith(u) for u in under)]
    return dirs


def select(source: dict, files) -> list[dict]:
    """The skills of one source: folder, label and a per-skill note."""
    kind = source["select"]
    under = source.get("under", [])
    picked = []
    if kind == "skill-dirs":
        for d in skill_dirs(files, under):
            picked.append({"dir": d, "label": source["label"], "note": ""})
    elif kind == "authors":
        for d in skill_dirs(files, ["skills/"]):
            parts = d.split("/")
            if len(parts) == 3 and parts[1] in source["authors"]:
                picked.append({"dir": d, "label": source["label"], "note": f"author {parts[1]}"})
    elif kind == "path-label":
        segments = source["label_segments"]
        for d in skill_dirs(files, under):
            parts = d.split("/")
            label = next((lab for lab, seg in segments.items() if seg in parts), None)
            if label is None:
                continue
            case = parts[source["case_segment"]] if len(parts) > source["case_segment"] else ""
            picked.append({"dir": d, "label": label, "note": case})
    elif kind == "expected":
        by_path = {p: oid for p, oid, _ in files}
        for d in skill_dirs(files, under):
            picked.append({"dir": d, "label": None, "note": "", "expected": by_path.get(f"{d}/_expected.json")})
    else:
        raise ValueError(f"unknown select {kind!r} in source {source['name']}")
    return picked


def expected_label(data: bytes | None, folder: str) -> str:
    if data is not None:
        doc = json.loads(data)
        if "is_malicious" in doc:
            return "malicious" if doc["is_malicious"] else "benign"
        if "expected_safe" in doc:
            return "benign" if doc["expected_safe"] else "malicious"
    return "benign" if "/safe" in folder else "malicious"


def skill_id(source: str, folder: str, under: list[str]) -> str:
    rel = folder
    for u in under:
        if (folder + "/").startswith(u):
            rel = folder[len(u):]
            break
    if rel.startswith("skills/"):
        rel = rel[len("skills/"):]
    if not rel:
        rel = posixpath.basename(folder)
    rel = rel.replace("/.claude/skills/", "/").replace("/.openclaw/skills/", "/")
    return f"{source}/{rel}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirror-root", type=Path, default=Path(os.environ.get("SIGMA_EVAL_MIRRORS", "/work/.mirror")))
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache/sigma/eval")
    parser.add_argument("--labels", type=Path, default=HERE / "labels.csv")
    args = parser.parse_args()

    sources = tomllib.loads((HERE / "sources.toml").read_text())["source"]
    skills_root = args.out / "skills"
    if skills_root.exists():
        shutil.rmtree(skills_root)
    rows = []
    for source in sources:
        gitdir = locate_repo(source["repo"], source["commit"], args.mirror_root, args.out)
        files = tree_files(gitdir, source["commit"])
        reader = BlobReader(gitdir)
        exported = skipped = missing = unlabelled = 0
        for skill in select(source, files):
            folder = skill["dir"]
            label = skill["label"]
            if label is None:
                oid = skill.pop("expected")
                label = expected_label(reader.read(oid) if oid else None, folder)
            inside = [(p, oid) for p, oid, _ in files if p.startswith(folder + "/")]
            if len(inside) > MAX_SKILL_FILES:
                skipped += 1
                continue
            required = [needle.lower() for needle in source.get("require_any", [])]
            if required:
                text = b"".join(reader.read(oid) or b"" for _, oid in inside).decode("utf-8", "replace").lower()
                if not any(needle in text for needle in required):
                    unlabelled += 1
                    continue
            sid = skill_id(source["name"], folder, source.get("under", []))
            dest = skills_root / sid
            for path, oid in inside:
                if posixpath.basename(path) == "_expected.json":
                    continue  # a benchmark's answer key is not part of the skill
                data = reader.read(oid)
                if data is None:
                    missing += 1  # a file of 4 MiB or more, absent from the snapshot
                    continue
                target = dest / path[len(folder) + 1:]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            group = group_of(source, sid, skill["note"])
            rows.append({
                "id": sid,
                "source": source["name"],
                "label": label,
                "split": split_of(group),
                "group": group,
                "repo": source["repo"],
                "commit": source["commit"],
                "path": folder,
                "note": skill["note"],
                "provenance": source["provenance"],
            })
            exported += 1
        reader.close()
        print(f"{source['name']:<20} {exported:>5} skills"
              + (f", {skipped} over {MAX_SKILL_FILES} files skipped" if skipped else "")
              + (f", {missing} files absent from the snapshot" if missing else "")
              + (f", {unlabelled} without the source's required indicator left out" if unlabelled else ""), file=sys.stderr)

    ids = [r["id"] for r in rows]
    if len(ids) != len(set(ids)):
        raise SystemExit("duplicate skill ids: make the source names or paths distinct")
    rows.sort(key=lambda r: r["id"])
    with args.labels.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0].keys()), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    by = {}
    for r in rows:
        key = (r["split"], r["label"])
        by[key] = by.get(key, 0) + 1
    print(f"{len(rows)} skills: " + ", ".join(f"{s} {l} {n}" for (s, l), n in sorted(by.items())), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
