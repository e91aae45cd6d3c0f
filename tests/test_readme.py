"""Every code block in README.md runs: Python blocks as scripts (or with pytest when they hold tests), shell
blocks' `ces-logging` lines as commands, all against the emulator; what each must do is in tests/doc_blocks.py.
The set-up lines (`make ...`, `pip install`) are what CI itself runs to get here. The README stays short (the
rest is the documentation site, docs/, whose blocks tests/test_docs.py runs the same way), and each of its links
into the site names a page that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ces_logging.emulator import Emulator

from .doc_blocks import ROOT, expectations_of, run_python_block, run_shell_block

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)
README_MAX_BYTES = 12 * 1024  # issue 24: what the package is, its set-up and the way into the site


def test_readme_has_blocks() -> None:
    assert sum(lang == "python" for lang, _ in BLOCKS) >= 4 and sum(lang == "sh" for lang, _ in BLOCKS) >= 3


def test_readme_is_short() -> None:
    size = len(README.encode())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes: move detail into docs/ (at most {README_MAX_BYTES})"


def test_readme_starts_with_the_two_set_up_commands() -> None:
    first = BLOCKS[0] if BLOCKS else ("", "")
    assert first[0] == "sh" and re.search(r"^make demo\b", first[1], re.M) and re.search(r"^make test\b", first[1],
                                                                                          re.M), first  # fmt: skip


def test_readme_links_into_the_site_resolve() -> None:
    links = re.findall(r"\]\(((?:docs|examples)/[^)#\s]+)(?:#[^)]*)?\)", README)
    assert sum(link.startswith("docs/") for link in links) >= 8, links  # a pointer per topic
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


@pytest.mark.parametrize("index", [i for i, (lang, _) in enumerate(BLOCKS) if lang == "python"])
def test_python_block_runs(index: int, emu: Emulator, tmp_path: Path) -> None:
    code = BLOCKS[index][1]
    matches = expectations_of(code)
    if len(matches) != 1:
        pytest.fail(f"README block {index} matches {len(matches)} entries of EXPECT: give it one\n{code}")
    run_python_block(code, matches[0], emu, tmp_path)


@pytest.mark.parametrize("index", [i for i, (lang, _) in enumerate(BLOCKS) if lang == "sh"])
def test_shell_block_runs(index: int, emu: Emulator) -> None:
    run_shell_block(BLOCKS[index][1], emu)
