#!/usr/bin/env python3
"""Measures the sandbox engine on the evaluation set built by eval/build.py.

For every skill of the chosen part it runs `sigma scan --format json` (and, with --cisco, Cisco's
skill-scanner on the same folder with its static analyzers: the default pattern, bytecode and
pipeline analyzers plus the behavioral dataflow analyzer; no LLM, no cloud lookups), and prints recall and false-positive
rate per source. A skill is flagged when the scan blocks it or its risk is high or critical: the
level the consensus policy treats as a hard gate. For Cisco's scanner, flagged means a finding of
severity HIGH or CRITICAL.

    python3 eval/run.py --split heldout [--cisco] [--sigma PATH] [--jobs 2] [--json OUT]
    python3 eval/run.py --split dev --errors     # misses and false positives, development part only

The held-out part is for measuring only: --errors refuses it, so no rule is tuned on its cases.
"""

import argparse
import collections
import concurrent.futures
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GATE = {"high", "critical"}
CISCO_VERSION = "2.3.2"


def default_sigma() -> str:
    """The newest release `sigma` among $CARGO_TARGET_DIR, the project's shared target dir and
    the checkout's own `target/` (a build without the scripts' environment lands there)."""
    dirs = [os.environ.get("CARGO_TARGET_DIR"), str(Path.home() / ".cache/sigma/target"), str(HERE.parent / "target")]
    found = [Path(d) / "release" / "sigma" for d in dirs if d]
    found = [p for p in found if p.exists()]
    if not found:
        return str(Path(dirs[0] or dirs[1]) / "release" / "sigma")
    return str(max(found, key=lambda p: p.stat().st_mtime))


def scan_sigma(sigma: str, folder: Path) -> dict:
    started = time.perf_counter()
    done = subprocess.run(
        [sigma, "scan", "--format", "json", "--fail-on", "never", str(folder)],
        capture_output=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        return {"error": done.stderr.decode(errors="replace").strip()[:300], "seconds": elapsed}
    return {**judge(json.loads(done.stdout)), "seconds": elapsed}


def judge(report: dict) -> dict:
    gate = [
        f for f in report.get("findings", [])
        if str(f.get("severity", "")).lower() in GATE and str(f.get("confidence", "")).lower() in ("medium", "high")
    ]
    return {
        "flagged": bool(report["blocked"]) or report["risk_level"] in GATE,
        "risk": report["risk_level"],
        "blocked": bool(report["blocked"]),
        "reasons": report.get("block_reasons", [])[:3],
        "top": [f"{f['rule_id']}({f['category']})@{f.get('file')}:{f.get('line')}" for f in gate[:4]],
        "categories": sorted({f["category"] for f in gate}),
    }


def scan_batch(binary: str, folders: list[Path], jobs: int) -> list[dict]:
    """The tuning loop's fast path: scanner/examples/scan_many scans many folders in one process
    (same engine and pack as `sigma scan`, no process start per skill)."""
    chunks = [folders[i::jobs] for i in range(jobs)]

    def run(chunk):
        started = time.perf_counter()
        done = subprocess.run([binary, *map(str, chunk)], capture_output=True, check=True)
        each = (time.perf_counter() - started) / max(len(chunk), 1)
        return [{**judge(json.loads(line)), "seconds": each} for line in done.stdout.splitlines()]

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        parts = list(pool.map(run, chunks))
    results = [None] * len(folders)
    for i, part in enumerate(parts):
        for j, result in enumerate(part):
            results[i + j * jobs] = result
    return results


def cisco_binary(tools: Path) -> str:
    venv = tools / "skill-scanner-venv"
    exe = venv / "bin" / "skill-scanner"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", f"cisco-ai-skill-scanner=={CISCO_VERSION}"],
            check=True,
        )
    return str(exe)


def scan_cisco(exe: str, folder: Path) -> dict:
    started = time.perf_counter()
    done = subprocess.run(
        [exe, "scan", str(folder), "--format", "json", "--compact", "--use-behavioral"],
        capture_output=True,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    elapsed = time.perf_counter() - started
    try:
        report = json.loads(done.stdout[done.stdout.index(b"{"):])
    except ValueError:
        return {"error": (done.stderr or done.stdout).decode(errors="replace").strip()[-300:], "seconds": elapsed}
    findings = report.get("findings", [])
    severities = {str(f.get("severity", "")).upper() for f in findings}
    return {
        "flagged": bool(severities & {"HIGH", "CRITICAL"}),
        "risk": str(report.get("max_severity", "")).lower(),
        "top": [f"{f.get('rule_id')}({f.get('category')})" for f in findings if str(f.get("severity", "")).upper() in ("HIGH", "CRITICAL")][:4],
        "seconds": elapsed,
    }


def rate(num: int, den: int) -> str:
    return f"{num / den:.2f}" if den else "  - "


def table(title: str, rows: list[dict], results: dict) -> dict:
    by_source = collections.defaultdict(lambda: {"tp": 0, "fn": 0, "fp": 0, "tn": 0, "err": 0, "s": 0.0})
    for row in rows:
        result = results[row["id"]]
        cell = by_source[row["source"]]
        cell["s"] += result["seconds"]
        if "error" in result:
            cell["err"] += 1
            continue
        malicious = row["label"] == "malicious"
        key = ("tp" if result["flagged"] else "fn") if malicious else ("fp" if result["flagged"] else "tn")
        cell[key] += 1
    total = {k: sum(c[k] for c in by_source.values()) for k in ("tp", "fn", "fp", "tn", "err", "s")}
    print(f"\n{title}")
    print(f"{'source':<20} {'malicious':>9} {'benign':>7} {'recall':>7} {'fp rate':>8} {'errors':>7} {'ms/skill':>9}")
    for name, c in sorted(by_source.items()) + [("ALL", total)]:
        n = c["tp"] + c["fn"] + c["fp"] + c["tn"] + c["err"]
        print(f"{name:<20} {c['tp'] + c['fn']:>9} {c['fp'] + c['tn']:>7} {rate(c['tp'], c['tp'] + c['fn']):>7}"
              f" {rate(c['fp'], c['fp'] + c['tn']):>8} {c['err']:>7} {1000 * c['s'] / max(n, 1):>9.0f}")
    return {"by_source": dict(by_source), "total": total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=["dev", "heldout", "all"], default="heldout")
    parser.add_argument("--sigma", default=default_sigma())
    parser.add_argument("--cisco", action="store_true", help="also run Cisco's skill-scanner on the same cases")
    parser.add_argument("--skills", type=Path, default=Path.home() / ".cache/sigma/eval/skills")
    parser.add_argument("--tools", type=Path, default=Path.home() / ".cache/sigma/tools")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--source", action="append", help="only these sources")
    parser.add_argument("--errors", action="store_true", help="list misses and false positives (dev part only)")
    parser.add_argument("--json", type=Path, help="write every result here")
    parser.add_argument("--sample", type=int, metavar="N", help="at most N skills per source and label (a fixed, hash-ordered stratified sample)")
    parser.add_argument("--cisco-cache", type=Path, default=Path.home() / ".cache/sigma/eval/cisco-results.jsonl",
                        help="Cisco results by skill id, appended as they come and reused (the scanner takes seconds per skill)")
    parser.add_argument("--cached-only", action="store_true",
                        help="with --cisco: only the skills Cisco's scanner has already been run on (a partial comparison)")
    parser.add_argument("--batch", metavar="BIN", help="scan with scanner/examples/scan_many (tuning loop) instead of `sigma scan`")
    args = parser.parse_args()
    if args.errors and args.split != "dev":
        parser.error("--errors lists cases; only the development part may be read while tuning")
    if not args.batch and not Path(args.sigma).exists() and not shutil.which(args.sigma):
        parser.error(f"no sigma binary at {args.sigma}: cargo build --release --bin sigma")

    rows = [r for r in csv.DictReader((HERE / "labels.csv").open())
            if args.split in ("all", r["split"]) and (not args.source or r["source"] in args.source)]
    if args.sample:
        order = sorted(rows, key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest())
        taken = collections.Counter()
        rows = []
        for r in order:
            if taken[(r["source"], r["label"])] < args.sample:
                taken[(r["source"], r["label"])] += 1
                rows.append(r)
        # Hash order, not id order: a run stopped early still covers every source.
    if args.cached_only:
        done = set()
        if args.cisco_cache.exists():
            done = {json.loads(line)["id"] for line in args.cisco_cache.read_text().splitlines()}
        rows = [r for r in rows if r["id"] in done]
    missing = [r["id"] for r in rows if not (args.skills / r["id"]).is_dir()]
    if missing:
        parser.error(f"{len(missing)} skills are not built (first: {missing[0]}): python3 eval/build.py")

    scanners = {"sigma": lambda folder: scan_sigma(args.sigma, folder)}
    if args.batch:
        scanners = {"sigma (scan_many)": None}
    if args.cisco:
        exe = cisco_binary(args.tools)
        cache = {}
        if args.cisco_cache.exists():
            for line in args.cisco_cache.read_text().splitlines():
                entry = json.loads(line)
                cache[entry["id"]] = entry["result"]
        lock = threading.Lock()

        def cisco(folder: Path) -> dict:
            sid = str(folder.relative_to(args.skills))
            if sid in cache:
                return cache[sid]
            result = scan_cisco(exe, folder)
            if "error" not in result:
                with lock, args.cisco_cache.open("a") as out:
                    out.write(json.dumps({"id": sid, "version": CISCO_VERSION, "result": result}) + "\n")
            return result

        scanners[f"cisco skill-scanner {CISCO_VERSION}"] = cisco
    summary = {"split": args.split, "skills": len(rows), "scanners": {}}
    all_results = {}
    for name, scan in scanners.items():
        if scan is None:
            found = scan_batch(args.batch, [args.skills / r["id"] for r in rows], args.jobs)
            results = dict(zip((r["id"] for r in rows), found))
        else:
            with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
                results = dict(zip((r["id"] for r in rows), pool.map(lambda r: scan(args.skills / r["id"]), rows)))
        summary["scanners"][name] = table(f"{name} on the {args.split} part ({len(rows)} skills)", rows, results)
        all_results[name] = results
        if args.errors:
            print(f"\n{name}: misses and false positives")
            for row in rows:
                result = results[row["id"]]
                wrong = "error" in result or result["flagged"] != (row["label"] == "malicious")
                if wrong:
                    kind = "ERROR" if "error" in result else ("MISS" if row["label"] == "malicious" else "FP")
                    detail = result.get("error") or f"risk={result['risk']} {' '.join(result['top'])} {' '.join(result.get('reasons', []))}"
                    print(f"  {kind:<5} {row['id']:<60} {row['note']:<22} {detail}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "results": all_results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
