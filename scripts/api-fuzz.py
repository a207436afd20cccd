#!/usr/bin/env python3
"""Helper of scripts/api-fuzz.sh (standard library only).

  free-port                      print a TCP port on 127.0.0.1 that is free right now
  seed OUT_DIR                   log in on every plane, create a few resources of each kind, write
                                 OUT_DIR/{developer-session,operator-session} and OUT_DIR/schemathesis.toml
  summary REPORT_DIR WALL_SECS   print the figures of every run's JSON report and the distinct
                                 failures of every run's log; exit 1 on a failure
  log-errors LOG                 print the distinct ERROR events of a JSON log
  run-errors REPORT              print the titles of the errors (not check failures) schemathesis
                                 hit in a run; exit 1 if there were any

`seed` reads SIGMA_FUZZ_API (base URL), SIGMA_FUZZ_MAILDEV (maildev HTTP API), SIGMA_FUZZ_DEV_TOKEN,
SIGMA_FUZZ_OP_TOKEN, SIGMA_FUZZ_CONSOLE_NAME and SIGMA_FUZZ_CONSOLE_PASSWORD.
"""

import gzip
import io
import json
import os
import re
import socket
import sys
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr)


class Api:
    def __init__(self, base: str):
        self.base = base.rstrip("/")

    def call(self, method, path, body=None, token=None, content_type=None, headers=None):
        data = None
        h = dict(headers or {})
        if body is not None:
            if isinstance(body, (bytes, bytearray)):
                data = bytes(body)
                h["Content-Type"] = content_type or "application/octet-stream"
            else:
                data = json.dumps(body).encode()
                h["Content-Type"] = "application/json"
        if token:
            h["Authorization"] = f"Bearer {token}"
        url = path if path.startswith("http") else self.base + path
        req = urllib.request.Request(url, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                raw, status = r.read(), r.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")


def sample_zip() -> bytes:
    """examples/weather-skill as a zip."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        src = ROOT / "examples" / "weather-skill"
        for p in sorted(src.rglob("*")):
            if p.is_file():
                z.write(p, str(p.relative_to(src)))
    return buf.getvalue()


def sample_bundle() -> bytes:
    """examples/weather-skill as a tar.gz, as the README's curl sends it."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w") as tar:
            src = ROOT / "examples" / "weather-skill"
            for p in sorted(src.rglob("*")):
                tar.add(p, arcname=str(p.relative_to(src)), recursive=False)
    return buf.getvalue()


def portal_login(api: Api, maildev: str, email: str) -> dict:
    status, body = api.call("POST", "/api/v1/sigma/dev/auth/email/start", {"email": email})
    if status not in (200, 202):
        raise SystemExit(f"email login start answered {status}: {body}")
    code = None
    for _ in range(100):
        with urllib.request.urlopen(f"{maildev.rstrip('/')}/api/email", timeout=10) as r:
            mails = json.loads(r.read())
        for mail in reversed(mails):
            if any(t.get("address", "").lower() == email for t in mail.get("to", [])):
                m = re.search(r"\b(\d{6})\b", mail.get("text") or mail.get("html") or "")
                if m:
                    code = m.group(1)
                    break
        if code:
            break
        time.sleep(0.2)
    if not code:
        raise SystemExit(f"no login code for {email} arrived in maildev")
    status, body = api.call("POST", "/api/v1/sigma/dev/auth/email/verify", {"email": email, "code": code})
    if status != 200 or not isinstance(body, dict) or "token" not in body:
        raise SystemExit(f"email login verify answered {status}: {body}")
    return body


def console_login(api: Api, name: str, password: str) -> dict:
    status, body = api.call("POST", "/api/v1/sigma/operator/auth/login", {"name": name, "password": password})
    if status != 200 or not isinstance(body, dict) or "token" not in body:
        raise SystemExit(f"console login answered {status}: {body}")
    return body


def certify(api: Api, submission: str, dev_token: str, op_token: str):
    """Waits for the submission to await an operator, approves it, returns its certificate id."""
    path = f"/api/v1/sigma/dev/submissions/{submission}"
    for _ in range(150):
        st, b = api.call("GET", path, token=dev_token)
        if st == 200 and b.get("stage") == "AWAITING_OPERATOR":
            break
        time.sleep(0.2)
    else:
        log(f"seeding certificate: submission {submission} never awaited an operator: {str(b)[:200]}")
        return None
    st, b = api.call("POST", f"/api/v1/sigma/operator/submissions/{submission}/decision",
                     {"decision": "APPROVED", "reason": "seeded by api-fuzz"}, op_token)
    if st != 200:
        log(f"seeding certificate: decision answered {st} {str(b)[:200]}")
        return None
    for _ in range(150):
        st, b = api.call("GET", path, token=dev_token)
        if st == 200 and b.get("certificateId"):
            return b["certificateId"]
        time.sleep(0.2)
    log(f"seeding certificate: none issued for {submission}: {str(b)[:200]}")
    return None


def seed(out: Path) -> None:
    api = Api(os.environ["SIGMA_FUZZ_API"])
    dev_token = os.environ["SIGMA_FUZZ_DEV_TOKEN"]
    op_token = os.environ["SIGMA_FUZZ_OP_TOKEN"]
    portal = portal_login(api, os.environ["SIGMA_FUZZ_MAILDEV"], "fuzz-portal@sigma.local")
    console = console_login(api, os.environ["SIGMA_FUZZ_CONSOLE_NAME"], os.environ["SIGMA_FUZZ_CONSOLE_PASSWORD"])
    (out / "developer-session").write_text(portal["token"] + "\n")
    (out / "operator-session").write_text(console["token"] + "\n")
    log(f"portal session for {portal['email']} ({portal['developerId']}), console session for {console['operator']}")
    ps, cs = portal["token"], console["token"]
    ids: dict[str, list] = {}

    def keep(kind, status, body, key="id", ok=(200, 201, 202)):
        if status in ok and isinstance(body, dict) and body.get(key):
            ids.setdefault(kind, []).append(body[key])
            return body[key]
        log(f"seeding {kind}: {status} {str(body)[:200]}")
        return None

    ids["developer"] = [portal["developerId"]]
    bundle = sample_bundle()
    # Developer plane: drafts (one kept, one for DELETE), a ticket, a direct submission.
    for kind in ("draft", "draft_delete"):
        draft = keep(kind, *api.call("POST", "/api/v1/sigma/dev/drafts", {"category": "SKILL"}, ps))
        if draft and kind == "draft":
            st, b = api.call("PUT", f"/api/v1/sigma/dev/drafts/{draft}/bundle", bundle, ps, "application/gzip")
            if st != 200:
                log(f"draft bundle: {st} {str(b)[:200]}")
    keep("ticket", *api.call("POST", "/api/v1/sigma/dev/support/tickets", {"subject": "fuzz", "body": "seeded by api-fuzz"}, ps))
    # Two direct submissions: with no validator in this system both end ESCALATED. An operator
    # approves the first, which issues a certificate (public plane, flags); the second stays
    # escalated for the decision and retry operations.
    subs = []
    for _ in range(2):
        st, b = api.call(
            "POST", "/api/v1/sigma/dev/submissions?category=SKILL&name=weather", bundle, dev_token,
            "application/gzip", {"Idempotency-Key": f"fuzz-{uuid.uuid4()}"},
        )
        sub = keep("submission", st, b)
        if sub:
            subs.append(sub)
    if subs:
        certificate = certify(api, subs[0], dev_token, op_token)
        if certificate:
            ids["certificate"] = [certificate]
            keep("flag", *api.call("POST", f"/api/v1/public/certificates/{certificate}/flags", {"reason": "seeded by api-fuzz"}), key="flagId")
    ids["email"] = [portal["email"]]
    # Operator plane: a voucher, a campaign, two rules (one for DELETE), an allowlist entry.
    code = f"FUZZ-{uuid.uuid4().hex[:12].upper()}"
    st, b = api.call("POST", "/api/v1/sigma/operator/vouchers", {"code": code, "kind": "CREDITS", "credits": 100, "uses": 1000}, cs)
    if st in (200, 201):
        ids["voucher_code"] = [code]
    else:
        log(f"seeding voucher: {st} {str(b)[:200]}")
    keep("campaign", *api.call("POST", "/api/v1/sigma/operator/pricing/campaigns", {
        "name": "fuzz", "kind": "WINDOW", "discountBps": 1000,
        "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600)),
        "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400)),
    }, cs))
    for kind in ("rule", "rule_delete"):
        keep(kind, *api.call("POST", "/api/v1/sigma/operator/pricing/rules", {"kind": "PACKAGE", "label": f"fuzz {kind}", "amountCredits": 1}, cs))
    st, b = api.call("POST", "/api/v1/sigma/operator/free-allowlist", {"pattern": "@fuzz.example"}, cs)
    if st in (200, 201):
        ids["allowlist"] = ["@fuzz.example"]
    else:
        log(f"seeding allowlist: {st} {str(b)[:200]}")

    write_config(out / "schemathesis.toml", ids)
    (out / "seeded.json").write_text(json.dumps(ids, indent=2) + "\n")
    log("seeded: " + ", ".join(f"{k}={len(v)}" for k, v in sorted(ids.items())))


# Which real values each templated path parameter draws from (with probability P; the rest of
# the time schemathesis generates its own), so operations on owned resources get past 404.
BINDINGS = [
    # (path regex, only this method, not this method, parameter, dictionary)
    (r"^/api/v1/sigma/dev/drafts/\{id\}$", "DELETE", None, "path.id", "draft_delete"),
    (r"^/api/v1/sigma/dev/drafts/\{id\}", None, "DELETE", "path.id", "draft"),
    (r"^/api/v1/sigma/dev/submissions/\{id\}", None, None, "path.id", "submission"),
    (r"^/api/v1/sigma/dev/support/tickets/\{id\}", None, None, "path.id", "ticket"),
    (r"^/api/v1/sigma/operator/submissions/\{id\}", None, None, "path.id", "submission"),
    (r"^/api/v1/sigma/operator/support/tickets/\{id\}", None, None, "path.id", "ticket"),
    (r"^/api/v1/sigma/operator/developers/\{id\}", None, None, "path.id", "developer"),
    (r"^/api/v1/sigma/operator/pricing/campaigns/\{id\}", None, None, "path.id", "campaign"),
    (r"^/api/v1/sigma/operator/pricing/rules/\{id\}$", None, None, "path.id", "rule_delete"),
    (r"^/api/v1/sigma/operator/free-allowlist/\{pattern\}$", None, None, "path.pattern", "allowlist"),
    (r"^/api/v1/sigma/dev/credits/vouchers$", None, None, "body.code", "voucher_code"),
    (r"^/api/v1/public/certificates/\{id\}", None, None, "path.id", "certificate"),
    (r"^/api/v1/sigma/operator/certificates/\{id\}", None, None, "path.id", "certificate"),
    (r"^/api/v1/sigma/operator/flags/\{flag_id\}", None, None, "path.flag_id", "flag"),
    (r"^/api/v1/sigma/operator/developers$", None, None, "query.email", "email"),
]


# What this system answers by design and no schema can express. Keep this list short: everything
# else the runs report is a finding. The summary applies it to each failure schemathesis reports
# (operation, check, status, error code) and prints what it allowed; per-operation check settings
# in schemathesis's own config leak into other operations in 4.32.5, so none are written there.
# Each entry: (why, "METHOD path" or a regex over it, check id, allowed statuses, allowed codes
# or None for any).
ALLOWANCES = [
    ("No LLM runs here: the manifest assistant is unreachable by design (502).",
     r"^POST /api/v1/sigma/dev/drafts/\{id\}/manifest$", ("ST101", "ST202"), {"502"}, {"assistant_unavailable"}),
    ("Nothing leaves the machine, so a repository archive cannot be fetched for a dry-run or a "
     "quote, nor SKILL.md from GitHub (502, the answer when a dependency fails).",
     r"^POST /api/v1/(sigma/dev/drafts/\{id\}/(validate|quote)|public/certificates/\{id\}/compare-skill-from-github)$",
     ("ST101", "ST202"), {"502"}, {"dry_run_unavailable", "upstream_unavailable"}),
    ("A page cursor is an opaque token the API issued; a generated one is refused (covered by "
     "the integration tests).", r"^GET ", ("ST202",), {"400"}, {"invalid_cursor"}),
    # Rules between fields, or on content, that JSON Schema as utoipa writes it cannot state;
    # the handler checks each and answers 422 naming the rule.
    ("A draft's entry point depends on its category, and its advisory note may not instruct "
     "the reviewers.", r"^(POST /api/v1/sigma/dev/drafts|PATCH /api/v1/sigma/dev/drafts/\{id\})$",
     ("ST202",), {"422"}, {"invalid_entry", "advisory_note_refused"}),
    ("An uploaded bundle must be a readable zip or tar.gz archive (and a multipart form well formed).",
     r"^(PUT /api/v1/sigma/dev/drafts/\{id\}/bundle|POST /api/v1/sigma/dev/submissions)$",
     ("ST202",), {"400", "422"}, {"unsupported_bundle", "corrupt_archive", "invalid_multipart", "empty_bundle", "bundle_limits"}),
    ("A voucher's credits depend on its kind.", r"^POST /api/v1/sigma/operator/vouchers$",
     ("ST202",), {"422"}, {"invalid_voucher"}),
    ("A campaign's fields depend on its kind, and startsAt comes before endsAt.",
     r"^POST /api/v1/sigma/operator/pricing/campaigns$", ("ST202",), {"422"}, {"invalid_campaign"}),
    ("A rule names a tier exactly when it is a COMPLEXITY_TIER rule.",
     r"^POST /api/v1/sigma/operator/pricing/rules$", ("ST202",), {"422"}, {"invalid_rule"}),
    ("A grant is never 0 credits, and a correction never takes the balance below zero.",
     r"^POST /api/v1/sigma/operator/developers/\{id\}/credits$", ("ST202",), {"422"}, {"invalid_grant"}),
    ("A bulk dismissal names at least one selector (certificateId, reporterHash or flagIds).",
     r"^POST /api/v1/sigma/operator/flags/dismiss$", ("ST202",), {"422"}, {"no_selector"}),
]


def allowed(op: str, check: str, status: str, code: str):
    """The reason a reported failure is allowed, or None."""
    for why, where, checks, statuses, codes in ALLOWANCES:
        if re.search(where, op or "") and check.split()[0] in checks and status in statuses \
                and (codes is None or code in codes):
            return why
    return None


def binding_lines(path: str, method: str | None, ids: dict) -> list[str]:
    """The parameter bindings of BINDINGS that apply to this operation."""
    params = []
    for regex, only, never, param, dictionary in BINDINGS:
        if not ids.get(dictionary) or not re.match(regex, path):
            continue
        if (only and method and only != method) or (never and method == never):
            continue
        params.append(f"{toml_str(param)} = {{ dictionary = {toml_str(dictionary)}, probability = 0.8 }}")
    return [f"parameters = {{ {', '.join(params)} }}"] if params else []


def toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a valid TOML basic string


def write_config(path: Path, ids: dict) -> None:
    lines = [
        "# Written by scripts/api-fuzz.py seed for one run; real ids of seeded resources.",
        f"hooks = {toml_str(str(Path(__file__).resolve()))}",
        "",
        "# Kept with this run's output, not in the working directory; each run starts afresh.",
        "[cache]",
        f"directory = {toml_str(str(path.parent.resolve() / 'cache'))}",
        "",
    ]
    used = set()
    ops = []
    for regex, only, never, param, dictionary in BINDINGS:
        if not ids.get(dictionary):
            continue
        used.add(dictionary)
        op = ["[[operations]]", f"include-path-regex = {toml_str(regex)}"]
        if only:
            op.append(f"include-method = {toml_str(only)}")
        if never:
            op.append(f"exclude-method = {toml_str(never)}")
        op.append(f"parameters = {{ {toml_str(param)} = {{ dictionary = {toml_str(dictionary)}, probability = 0.8 }} }}")
        ops.append("\n".join(op))
    for name in sorted(used):
        values = ", ".join(toml_str(str(v)) for v in ids[name])
        lines += [f"[dictionaries.{name}]", f"values = [{values}]", ""]
    lines += ["\n\n".join(ops), ""]
    path.write_text("\n".join(lines))


def failures(log: Path):
    """(operation, check, status, error code, body, curl) of each failure in a run's terminal log."""
    text = log.read_text(errors="replace")
    if "= FAILURES =" not in text:
        return
    text = text.split("= FAILURES =", 1)[1].split("= WARNINGS =", 1)[0]
    op = None
    for block in re.split(r"\n(?=_{3,} |\d+\. Test Case ID)", text):
        m = re.match(r"_{3,} (.+?) _{3,}", block)
        if m:
            op = m.group(1)
        checks = re.findall(r"^- (ST\d+ .+)$", block, re.M)
        status = re.search(r"^\[(\d{3})\]", block, re.M)
        body = re.search(r"^\[\d{3}\][^\n]*\n\n\s+`(.*)`$", block, re.M)
        curl = re.search(r"^\s+(curl .+)$", block, re.M)
        code = re.search(r'"code":"([^"]+)"', body.group(1)) if body else None
        for check in checks:
            yield op, check, status.group(1) if status else "-", code.group(1) if code else "-", \
                body.group(1) if body else "", curl.group(1) if curl else ""


def summary(report_dir: Path, wall: float) -> int:
    reports = sorted(report_dir.glob("*.json"))
    total_cases = 0
    per_check: dict[str, int] = {}
    ops_tested = 0
    failed = False
    print(f"\n{'run':<24} {'ops':>4} {'cases':>6} {'failed':>6}  {'time':>5}  failures by check")
    for rep in reports:
        d = json.loads(rep.read_text())
        ops = (d.get("operations") or {}).get("tested", 0)
        cases = d["test_cases"]["generated"]
        ops_tested += ops
        total_cases += cases
        checks = {}
        for f in d.get("failures", []):
            checks[f["title"]] = checks.get(f["title"], 0) + f["count"]
            per_check[f["title"]] = per_check.get(f["title"], 0) + f["count"]
        errors = sum(e["count"] for e in d.get("errors", []))
        if errors:
            failed = True
        desc = ", ".join(f"{k}: {v}" for k, v in sorted(checks.items())) or "none"
        if errors:
            desc += f"; {errors} errors"
        print(f"{rep.stem:<24} {ops:>4} {cases:>6} {d['test_cases']['with_failures']:>6}  {d['running_time']:>4.0f}s  {desc}")
    print(f"{'all runs':<24} {ops_tested:>4} {total_cases:>6}         {wall:>4.0f}s wall, everything included")
    for k, v in sorted(per_check.items()):
        print(f"  {k}: {v}")
    # The same refusal on several operations and runs is one finding: grouped by check, status
    # and error code, with the runs and operations it was seen on and one reproduction.
    groups: dict = {}
    allowances: dict = {}
    for log in sorted(report_dir.parent.glob("*.log")):
        for op, check, status, code, body, curl in failures(log):
            why = allowed(op, check, status, code)
            if why:
                allowances.setdefault(why, set()).add(f"{op} ({status} {code})")
                continue
            g = groups.setdefault((check, status, code), {"ops": set(), "runs": set(), "body": body, "curl": curl})
            g["ops"].add(op)
            g["runs"].add(log.stem)
    if allowances:
        print(f"\nallowed by a stated rule ({sum(len(v) for v in allowances.values())} operation answers):")
        for why, seen in sorted(allowances.items()):
            print(f"  - {why}")
            for item in sorted(seen):
                print(f"      {item}")
    if groups:
        failed = True
    if groups:
        print(f"\n{len(groups)} distinct failures (check, status, error code):")
        for (check, status, code), g in sorted(groups.items()):
            print(f"\n* {check} -- {status} {code} -- runs: {', '.join(sorted(g['runs']))}")
            for op in sorted(g["ops"]):
                print(f"    {op}")
            print(f"    e.g. {g['body'][:300]}")
            print(f"    {g['curl'][:600]}")
    print("\nresult:", "FAILED" if failed else "passed")
    return 1 if failed else 0


def register_hooks() -> None:
    """Loaded by schemathesis (`hooks` in the written config): bodies for the archive media types.

    The document gives the bundle bodies as arrays of bytes. An empty array is sent as the sample
    skill (so the accepting path is reached too), any other as those bytes.
    """
    import schemathesis

    samples = {"application/gzip": sample_bundle(), "application/zip": sample_zip()}

    def archive(media_type):
        def serialize(ctx, value):
            if isinstance(value, (bytes, bytearray)):
                return bytes(value)
            if isinstance(value, list) and all(isinstance(v, int) for v in value):
                return bytes(v & 0xFF for v in value) if value else samples[media_type]
            return json.dumps(value).encode()

        return serialize

    for media_type in samples:
        schemathesis.serializer(media_type)(archive(media_type))


def log_errors(log: Path) -> int:
    """Prints the distinct ERROR events of a JSON log (message and error), with counts."""
    seen: dict = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("level") != "ERROR" or event.get("message") == "response failed":
            continue
        key = (event.get("message"), str(event.get("error", ""))[:300])
        seen[key] = seen.get(key, 0) + 1
    for (message, error), n in sorted(seen.items(), key=lambda kv: -kv[1]):
        print(f"  {n:>4} x {message}: {error}")
    return 0


def main() -> int:
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "free-port":
        print(free_port())
        return 0
    if cmd == "seed":
        seed(Path(sys.argv[2]))
        return 0
    if cmd == "log-errors":
        return log_errors(Path(sys.argv[2]))
    if cmd == "run-errors":
        errors = json.loads(Path(sys.argv[2]).read_text()).get("errors", [])
        for e in errors:
            print(f"{e['title']} x{e['count']}")
        return 1 if errors else 0
    if cmd == "summary":
        return summary(Path(sys.argv[2]), float(sys.argv[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
elif __name__ == "_schemathesis_hooks":
    register_hooks()
