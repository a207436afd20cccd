# We never use eval() or os.system() here; see https://docs.python.org/3/library/subprocess.html
import subprocess

def run(args):
    # shell=True would be unsafe: arguments are passed as a list instead
    return subprocess.run(["/usr/bin/git", *args], check=True, capture_output=True)
