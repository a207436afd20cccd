import os
import subprocess
import sys

out_dir = os.environ.get("OUTPUT_DIR", os.path.dirname(sys.argv[1]))
subprocess.run(["soffice", "--headless", "--convert-to", "pdf", "--outdir", out_dir, sys.argv[1]], check=True)
