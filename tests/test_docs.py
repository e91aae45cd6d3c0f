"""Every code block in docs/ runs, as the README's do (tests/test_readme.py), against the emulator, and each one
checks something:

- a ``python`` block runs as a script (with pytest when it holds a test). It checks itself with ``assert``,
  or it has an entry in tests/doc_blocks.py's ``EXPECT`` saying which events it must store (a block that only
  exits 0 checks nothing);
- a ``sh`` block's ``ces-logging`` lines run in order against one emulator and must succeed; an event that
  ``send`` reported must then be stored, and ``events``/``doctor`` must print something. Its other lines may
  only be the set-up CI itself runs (``make ...``, ``pip install``);
- any other block (an output sample, a rule) is not run, and must say so: an HTML comment
  ``<!-- docs-test: skip (why) -->`` on the line before it. So must a ``python`` or ``sh`` block that is not
  meant to run.

A block that only defines a dictConfig mapping (a Django ``LOGGING``) gets, in its ``EXPECT`` entry, the
lines that apply it and log through it. A block shown both in README.md and here is the same code in both.

Beside the blocks: the reference pages' sources (every option documented where ``Options`` declares it, every
counter and drop reason in the counting rule's glossary) and the code's citations of the API page.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import NamedTuple

import pytest

from ces_logging import CESHandler, HandlerStats, Options
from ces_logging.emulator import Emulator

from .doc_blocks import EXPECT, checks_itself, expectations_of, run_python_block, run_shell_block

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MARK = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->")
RUN_LANGS = ("python", "sh")


class Block(NamedTuple):
    page: str  # docs-relative path
    line: int  # the opening fence's line, 1-based
    lang: str
    mark: str  # the docs-test marker before it, or ""
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    """Fenced blocks (``` at the start of a line), each with the marker comment right before it (blank lines
    between are allowed)."""
    out: list[Block] = []
    lines = path.read_text().splitlines()
    page = path.relative_to(DOCS).as_posix()
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):
            lang = lines[i][3:].strip().split(" ")[0]
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            m = MARK.fullmatch(lines[j].strip()) if j >= 0 else None
            end = i + 1
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            assert end < len(lines), f"{page}:{i + 1}: a code block is never closed"
            out.append(Block(page, i + 1, lang, m.group(1) if m else "", "\n".join(lines[i + 1 : end]) + "\n"))
            i = end + 1
        else:
            i += 1
    return out


BLOCKS = [b for p in sorted(DOCS.rglob("*.md")) for b in blocks_of(p)]
RUN = [b for b in BLOCKS if b.lang in RUN_LANGS and not b.mark.startswith("skip")]


def test_docs_have_blocks() -> None:
    assert sum(b.lang == "python" for b in RUN) >= 15 and sum(b.lang == "sh" for b in RUN) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_every_block_runs_or_says_why_not(block: Block) -> None:
    if block.mark.startswith("skip"):
        assert re.fullmatch(r"skip \(.{10,}\)", block.mark), f"{block.id}: say why it does not run: skip (why)"
        return
    assert block.lang in RUN_LANGS, f"{block.id}: a ```{block.lang} block must run or be marked docs-test: skip"
    assert not block.mark, f"{block.id}: unknown docs-test marker {block.mark!r}"
    if block.lang == "python":
        n = len(expectations_of(block.code))
        assert n <= 1, f"{block.id}: matches {n} entries of EXPECT in tests/doc_blocks.py: give it one"
        assert checks_itself(block.code) or n == 1, (
            f"{block.id}: a block that checks nothing itself (assert) needs an EXPECT entry in tests/doc_blocks.py"
        )


@pytest.mark.parametrize("block", [b for b in RUN if b.lang == "python"], ids=lambda b: b.id)
def test_python_block_runs(block: Block, emu: Emulator, tmp_path: Path) -> None:
    matches = expectations_of(block.code)
    run_python_block(block.code, matches[0] if matches else None, emu, tmp_path)


@pytest.mark.parametrize("block", [b for b in RUN if b.lang == "sh"], ids=lambda b: b.id)
def test_shell_block_runs(block: Block, emu: Emulator) -> None:
    assert re.search(r"^ces-logging ", block.code, flags=re.M), (
        f"{block.id}: no ces-logging command to run: mark it docs-test: skip (why)"
    )
    run_shell_block(block.code, emu)


def test_a_block_shown_in_the_readme_and_here_is_the_same_code() -> None:
    readme = dict.fromkeys(re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S))
    differ = []
    for code in readme:
        for marker in [m for m in EXPECT if m in code]:
            copies = [b for b in RUN if marker in b.code]
            differ += [b.id for b in copies if b.code != code]
    assert not differ, f"docs blocks that differ from the README's copy (one EXPECT entry checks both): {differ}"


def test_every_expectation_belongs_to_a_block_that_runs() -> None:
    """An entry whose block was removed, changed or marked skip would check nothing: each must match a block
    that runs, here or in the README."""
    readme = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    running = [b.code for b in RUN if b.lang == "python"] + readme
    stale = [marker for marker in EXPECT if not any(marker in code for code in running)]
    assert not stale, f"EXPECT entries in tests/doc_blocks.py that match no block that runs: {stale}"


# --- the reference's sources -------------------------------------------------------------------------------


def handler_options() -> list[str]:
    """The options a ``CESHandler`` takes, the one list the docstring and the configuration guide must match:
    the fields of ``ces_logging.Options`` where the package has that object (plus the handler's own keyword
    arguments beside it), else the handler's keyword parameters."""
    import ces_logging

    params = [
        p.name for p in inspect.signature(CESHandler.__init__).parameters.values()
        if p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD
    ]  # fmt: skip
    fields = getattr(getattr(ces_logging, "Options", None), "fields", None)
    if callable(fields):
        return [f.name for f in fields()] + [p for p in params if p != "options"]
    return params


def test_every_option_is_documented_where_options_declares_it() -> None:
    """``help()`` and the reference page show the options from their declarations in ``Options`` (the class
    docstrings, and tools/griffe_options.py for the site): each must say what it does, and each must reach both
    ``help(Options)`` and ``help(CESHandler)``, whose own arguments are documented under Args:."""
    fields = Options.fields()
    assert len(fields) >= 37  # every option CESHandler took as a parameter before Options
    vague = [f.name for f in fields if len(f.doc.split()) < 4 or not f.doc.endswith(".")]
    assert not vague, f"options without a sentence of documentation where Options declares them: {vague}"
    for owner in (Options, CESHandler):
        doc = owner.__doc__ or ""
        entry = r"^\s+{} \(\S.*\): {}"
        missing = [f.name for f in fields if not re.search(entry.format(f.name, re.escape(f.doc[:12])), doc, re.M)]
        assert not missing, f"options missing from help({owner.__name__}): {missing}"
    args = [p for p in inspect.signature(CESHandler.__init__).parameters if p != "self"]
    doc = CESHandler.__doc__ or ""
    missing = [p for p in args if not re.search(rf"^\s+(\*\*)?{p}: \S", doc, flags=re.M)]
    assert not missing, f"CESHandler arguments without an entry under Args: in its docstring: {missing}"
    page = (DOCS / "reference" / "handler.md").read_text()
    assert re.search(r"^::: ces_logging\.Options\s*$", page, flags=re.M)
    assert "tools/griffe_options.py:OptionsFields" in (ROOT / "mkdocs.yml").read_text()


def drop_reasons() -> set[str]:
    """Every reason the package drops a record for: the names it passes to its counting calls."""
    src = "\n".join(p.read_text() for p in (ROOT / "ces_logging").rglob("*.py"))
    found = set(re.findall(r"(?:dropped|refuse|add_dropped|_drop|lost)\(\s*\"([a-z_]+)\"", src))
    found |= set(re.findall(r"reason=\"([a-z_]+)\"", src))
    return found | {"inactive", "shutdown"}  # passed through variables


def test_counting_glossary_names_every_counter_and_reason() -> None:
    page = (DOCS / "design" / "counting.md").read_text()
    fields = [f.name for f in dataclasses.fields(HandlerStats)]
    missing = [f for f in fields if f"| `{f}` |" not in page]
    assert not missing, f"counters missing from the glossary in docs/design/counting.md: {missing}"
    reasons = drop_reasons()
    assert {"queue_full", "too_old", "rejected", "auth", "spool_full", "error"} <= reasons  # the scan works
    missing = sorted(r for r in reasons if f"| `{r}` |" not in page)
    assert not missing, f"drop reasons missing from docs/design/counting.md: {missing}"


def test_code_cites_the_api_page_not_files_outside_the_repository() -> None:
    api = (DOCS / "api.md").read_text()
    headings = {h.strip() for h in re.findall(r"^#+ (.+)$", api, flags=re.M)}
    outside, unknown = [], []
    for path in [*(ROOT / "ces_logging").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        if path.name == "test_docs.py":
            continue
        text = path.read_text()
        if re.search(r"NOTES\.md|report-events\.txt|query-event-detail\.txt", text):
            outside.append(str(path.relative_to(ROOT)))
        for section in re.findall(r"docs/api\.md, '([^']+)'", text):
            if section not in headings:
                unknown.append(f"{path.relative_to(ROOT)}: {section!r}")
    assert not outside, f"comments cite files outside the repository (cite docs/api.md instead): {outside}"
    assert not unknown, f"citations of docs/api.md sections that do not exist: {unknown}"


def test_reference_renders_every_public_name() -> None:
    """The reference pages are mkdocstrings directives: a public name without one would be missing there."""
    import ces_logging

    pages = "\n".join(p.read_text() for p in (DOCS / "reference").glob("*.md"))
    rendered = set(re.findall(r"^::: ces_logging\.(\w+)\s*$", pages, flags=re.M))
    missing = sorted(set(ces_logging.__all__) - rendered - {"__version__"})
    assert not missing, f"public names with no ::: directive in docs/reference/: {missing}"


# --- the guides' claims about the code and the tests -------------------------------------------------------------


def test_configuration_table_names_every_option_and_no_other() -> None:
    page = (DOCS / "guides" / "configuration.md").read_text()
    table = page[page.index("## The options at a glance") :].split("\n## ", 1)[0]
    rows = [ln for ln in table.splitlines() if ln.startswith("| `")]
    named = {n for ln in rows for n in re.findall(r"`(\w+)`", ln.split("|")[1])}
    options = set(handler_options())
    assert not options - named, f"options missing from docs/guides/configuration.md: {sorted(options - named)}"
    unknown = sorted(named - options)
    assert not unknown, f"docs/guides/configuration.md names options that do not exist: {unknown}"


def test_cited_tests_exist() -> None:
    """A page that says "tested by tests/x.py::test_y" must name a test that is there: a renamed or removed test
    would leave the claim standing with nothing behind it."""
    tests = ROOT / "tests"
    cited: list[tuple[str, str, str]] = []
    for path in sorted(DOCS.rglob("*.md")):
        for line in path.read_text().splitlines():
            file = ""  # `test_x.py::test_y` names the file; a `::test_z` after it on the line is in the same file
            for m in re.finditer(r"`((?:reliability/)?test_\w+\.py)?::(test_\w+)`", line):
                file = m[1] or file
                cited.append((path.name, file, m[2]))
    assert len(cited) >= 20, cited  # the servers guide's table alone names more
    missing = [
        f"{page}: {file}::{name}"
        for page, file, name in cited
        if not (tests / file).exists() or not re.search(rf"^def {name}\(", (tests / file).read_text(), flags=re.M)
    ]
    assert not missing, f"docs cite tests that do not exist: {missing}"


def test_layout_page_names_every_module() -> None:
    page = (DOCS / "design" / "layout.md").read_text()
    pkg = ROOT / "ces_logging"
    modules = [p.name for p in pkg.glob("*.py") if p.name != "__init__.py" and not p.name.startswith("_" * 2 + "i")]
    modules += [f"{p.name}/" for p in pkg.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    missing = [m for m in modules if f"`{m}`" not in page]
    assert not missing, f"modules missing from docs/design/layout.md: {missing}"
