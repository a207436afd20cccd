#!/usr/bin/env python3
"""Where a submission's time goes, read from Temporal workflow histories.

Each completed SubmissionWorkflow's history is swept from its start to its close, and every instant
is given to one bucket, in this order of precedence:

  activity <type>            an activity task is running in a worker (ActivityTaskStarted -> Completed)
  workflow task              a workflow task is running in a worker (WorkflowTaskStarted -> Completed);
                             local activities run inside it, so projections and the other local
                             steps are counted here
  waiting: activity task     an activity task is scheduled and no worker has it yet (Scheduled -> Started):
                             the server's transfer queue, matching, and the poll (for a retried
                             activity also its retry backoff: one ActivityTaskStarted per activity)
  waiting: workflow task     the same for a workflow task
  other                      none of the above (timers, an operator's decision)

so the buckets add up to the workflow's wall time even when votes run in parallel. It also prints
the hop counts and the median of each activity's and each wait's duration.

Usage: bench/history-breakdown.py --address 127.0.0.1:7233 [--limit 30] [--query '...']
Needs the `temporal` CLI on PATH (or $TEMPORAL_CLI).
"""

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
from datetime import datetime

CLI = os.environ.get("TEMPORAL_CLI", "temporal")


def timestamp(text):
    # RFC 3339 with up to nanoseconds; Python parses microseconds.
    text = text.rstrip("Z")
    if "." in text:
        head, frac = text.split(".")
        text = f"{head}.{frac[:6]:0<6}"
    return datetime.fromisoformat(text).timestamp()


def cli(address, *args):
    out = subprocess.run(
        [CLI, *args, "--address", address, "-o", "json"], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)


def kind(event):
    return event["eventType"].removeprefix("EVENT_TYPE_")


def intervals(events):
    """(start, end, bucket) for every task of one history, and the run's start and close."""
    out = []
    scheduled = {}  # event id -> (time, what)
    started = {}
    start = timestamp(events[0]["eventTime"])
    close = timestamp(events[-1]["eventTime"])
    for e in events:
        t, k, eid = timestamp(e["eventTime"]), kind(e), int(e["eventId"])
        if k == "ACTIVITY_TASK_SCHEDULED":
            name = e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
            scheduled[eid] = (t, name)
        elif k == "ACTIVITY_TASK_STARTED":
            sid = int(e["activityTaskStartedEventAttributes"]["scheduledEventId"])
            t0, name = scheduled[sid]
            out.append((t0, t, "waiting: activity task", name))
            started[sid] = t
        elif k in ("ACTIVITY_TASK_COMPLETED", "ACTIVITY_TASK_FAILED", "ACTIVITY_TASK_TIMED_OUT"):
            attrs = next(v for key, v in e.items() if key.endswith("EventAttributes"))
            sid = int(attrs["scheduledEventId"])
            _, name = scheduled[sid]
            out.append((started.get(sid, t), t, f"activity {name}", name))
        elif k == "WORKFLOW_TASK_SCHEDULED":
            scheduled[eid] = (t, "workflow task")
        elif k == "WORKFLOW_TASK_STARTED":
            sid = int(e["workflowTaskStartedEventAttributes"]["scheduledEventId"])
            out.append((scheduled[sid][0], t, "waiting: workflow task", "workflow task"))
            started[sid] = t
        elif k in ("WORKFLOW_TASK_COMPLETED", "WORKFLOW_TASK_FAILED", "WORKFLOW_TASK_TIMED_OUT"):
            attrs = next(v for key, v in e.items() if key.endswith("EventAttributes"))
            sid = int(attrs["scheduledEventId"])
            out.append((started.get(sid, t), t, "workflow task", "workflow task"))
    return start, close, out


PRECEDENCE = ["activity", "workflow task", "waiting: activity task", "waiting: workflow task"]


def rank(bucket):
    for i, prefix in enumerate(PRECEDENCE):
        if bucket.startswith(prefix):
            return i
    return len(PRECEDENCE)


def sweep(start, close, spans):
    """Seconds per bucket, each instant of [start, close] counted once."""
    points = sorted({start, close, *(s for s, _, _, _ in spans), *(e for _, e, _, _ in spans)})
    totals = {}
    for a, b in zip(points, points[1:]):
        if b <= start or a >= close:
            continue
        live = [bucket for s, e, bucket, _ in spans if s <= a and e >= b and e > s]
        bucket = min(live, key=rank) if live else "other"
        totals[bucket] = totals.get(bucket, 0.0) + (b - a)
    return totals


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", required=True)
    p.add_argument("--namespace", default="default")
    p.add_argument("--limit", type=int, default=30)
    p.add_argument(
        "--query",
        default="WorkflowType = 'SubmissionWorkflow' AND ExecutionStatus = 'Completed'",
    )
    args = p.parse_args()

    runs = cli(args.address, "workflow", "list", "--namespace", args.namespace, "--query", args.query, "--limit", str(args.limit))
    if not runs:
        sys.exit(f"no workflows match {args.query!r}")

    def history(run):
        ex = run["execution"]
        return cli(args.address, "workflow", "show", "--namespace", args.namespace, "-w", ex["workflowId"], "-r", ex["runId"])["events"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        histories = list(pool.map(history, runs))

    totals, walls, durations, hops = {}, [], {}, {"activity tasks": [], "workflow tasks": [], "local activities": []}
    for events in histories:
        start, close, spans = intervals(events)
        walls.append(close - start)
        for bucket, seconds in sweep(start, close, spans).items():
            totals[bucket] = totals.get(bucket, 0.0) + seconds
        for s, e, bucket, name in spans:
            key = f"wait for {name}" if bucket.startswith("waiting") else bucket
            durations.setdefault(key, []).append(e - s)
        kinds = [kind(e) for e in events]
        hops["activity tasks"].append(kinds.count("ACTIVITY_TASK_SCHEDULED"))
        hops["workflow tasks"].append(kinds.count("WORKFLOW_TASK_SCHEDULED"))
        hops["local activities"].append(kinds.count("MARKER_RECORDED"))

    n = len(histories)
    wall = sum(walls)
    ms = lambda s: s * 1000
    print(f"{n} completed submissions; workflow start -> close: median {ms(statistics.median(walls)):.0f} ms, "
          f"mean {ms(wall / n):.0f} ms")
    print("\nwhere the time goes (each instant counted once; share of the summed wall time):")
    waiting = sum(v for k, v in totals.items() if k.startswith("waiting"))
    for bucket, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {bucket:<40} {100 * seconds / wall:5.1f} %   {ms(seconds / n):6.1f} ms per submission")
    print(f"  {'= server dispatch (all waiting)':<40} {100 * waiting / wall:5.1f} %   {ms(waiting / n):6.1f} ms per submission")
    print("\nper submission: " + ", ".join(f"{statistics.median(v):.0f} {k}" for k, v in hops.items()) + " (medians)")
    print("\nmedian duration of each step (ms; count over all submissions):")
    for key, values in sorted(durations.items(), key=lambda kv: -statistics.median(kv[1])):
        print(f"  {key:<40} {ms(statistics.median(values)):7.1f}   p95 {ms(sorted(values)[int(0.95 * (len(values) - 1))]):7.1f}   n={len(values)}")


if __name__ == "__main__":
    main()
