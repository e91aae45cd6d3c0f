"""``python -m tests.apps.run_uwsgi ARGS``: exec the uwsgi beside this Python (the test extra installs it), so
that a test's server helper, which runs ``python -m``, can start uWSGI as it starts the others."""

import os
import shutil
import sys
from pathlib import Path

binary = Path(sys.executable).with_name("uwsgi")
path = str(binary) if binary.exists() else shutil.which("uwsgi")
if path is None:
    sys.exit("uwsgi not installed")
os.execv(path, [path, *sys.argv[1:]])
