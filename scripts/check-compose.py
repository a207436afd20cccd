"""Checks what the compose schema cannot: every depends_on, volume and YAML anchor names something defined."""
import re
import sys

text = open(sys.argv[1]).read()
services = set(re.findall(r"^  ([a-z0-9-]+):\s*$", text.split("\nvolumes:\n")[0].split("\nservices:\n")[1], re.M))
volumes = set(re.findall(r"^  ([a-z0-9-]+):\s*$", text.split("\nvolumes:\n")[1], re.M))
errors = []
for block in re.finditer(r"depends_on:\n((?:      .*\n)+)", text):
    for name in re.findall(r"^      ([a-z0-9-]+)(?::|\s*$)", block.group(1), re.M):
        if name not in services:
            errors.append(f"depends_on names an undefined service: {name}")
    for name in re.findall(r"^      - ([a-z0-9-]+)\s*$", block.group(1), re.M):
        if name not in services:
            errors.append(f"depends_on names an undefined service: {name}")
for name in re.findall(r"^      - ([a-z0-9-]+):/", text, re.M):
    if name not in volumes:
        errors.append(f"volume not declared: {name}")
for alias in re.findall(r"\*([a-z0-9-]+)", text):
    if f"&{alias}" not in text:
        errors.append(f"undefined YAML alias: {alias}")
if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"compose references ok: {len(services)} services, {len(volumes)} volumes")
