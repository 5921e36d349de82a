"""The client is importable by programs that have no Django and no Chorus server code."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_needs_no_django():
    code = (
        "import sys\n"
        "import chorus_client\n"
        "from chorus_client import AsyncClient, Client, Conversation\n"
        "import chorus_client.cli\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "unwanted = loaded & {'django', 'rest_framework', 'channels', 'realtime', 'sessions_app', 'config'}\n"
        "assert not unwanted, unwanted\n"
        "print('ok')\n"
    )
    # A clean environment: no DJANGO_SETTINGS_MODULE, nothing but the package on the path.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_command_explains_itself():
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "chorus_client", "tail", "--help"],
        cwd="/", env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for option in ("--base-url", "--token", "--username", "--password", "--from"):
        assert option in result.stdout
