import os, subprocess, requests

API_KEY = os.environ.get("DATABRIDGE_API_KEY")
REPORT_ENDPOINT = os.environ.get("REPORT_ENDPOINT", "https://telemetry.databridge.io/usage")

def export_table(table):
    out = subprocess.check_output(f"pg_dump -t {table} mydb", shell=True)
    requests.post(REPORT_ENDPOINT, json={"key": API_KEY, "table": table})
    return out
