"""Every code block in README.md runs: Python blocks as scripts (or with pytest when they hold tests), shell
blocks' `ces-logging` lines as commands, all against the emulator. The set-up lines (`make ...`, `pip install`)
are what CI itself runs to get here."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ces_logging.emulator import Emulator

from .conftest import PROJECT

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def env_for(emu: Emulator) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("CES_", "HUAWEICLOUD_SDK_"))}
    return {**e, "CES_ENDPOINT": emu.url, "CES_PROJECT_ID": PROJECT, "HUAWEICLOUD_SDK_CREDENTIALS_FILE": "/none"}


def test_readme_has_blocks() -> None:
    assert sum(lang == "python" for lang, _ in BLOCKS) >= 4 and sum(lang == "sh" for lang, _ in BLOCKS) >= 3


@pytest.mark.parametrize("index", [i for i, (lang, _) in enumerate(BLOCKS) if lang == "python"])
def test_python_block_runs(index: int, emu: Emulator, tmp_path: Path) -> None:
    code = BLOCKS[index][1]
    if "def test_" in code:
        f = tmp_path / "test_block.py"
        f.write_text(code)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(f)]
    else:
        cmd = [sys.executable, "-c", code]
    r = subprocess.run(cmd, env=env_for(emu), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    if "def test_" in code:
        assert "1 passed" in r.stdout
        assert "not delivered" not in r.stdout + r.stderr  # the fixture leaves no handler behind
    elif "getLogger" in code:
        assert emu.count(PROJECT) > 0  # what the block logged reached the emulator


@pytest.mark.parametrize("index", [i for i, (lang, _) in enumerate(BLOCKS) if lang == "sh"])
def test_shell_block_runs(index: int, emu: Emulator) -> None:
    lines = [ln.split("#")[0].strip() for ln in BLOCKS[index][1].splitlines()]
    commands = [ln for ln in lines if ln.startswith("ces-logging ")]
    others = [ln for ln in lines if ln and not ln.startswith("ces-logging ")]
    assert all(ln.startswith(("make ", "pip install")) for ln in others), others
    for c in commands:
        args = shlex.split(c)[1:]
        r = subprocess.run([sys.executable, "-m", "ces_logging", *args], env=env_for(emu), capture_output=True,
                           text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, (c, r.stdout, r.stderr)
