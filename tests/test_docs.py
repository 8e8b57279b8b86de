"""The README and docs/: a short README, links and anchors that resolve, a complete code map."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
CODE_MAP = DOCS / "development.md"
PACKAGE = REPO / "pidaemon"
README_MAX_LINES = 200

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def prose(text: str) -> str:
    """`text` without its fenced code blocks (where a `#` line is no heading)."""
    return FENCE.sub("", text)


def anchor(heading: str) -> str:
    """The anchor a code host gives a heading: its text without Markdown, lowercase, spaces to
    '-', and every character but letters, digits, '-' and '_' dropped."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = text.replace("`", "")
    text = re.sub(r"(\*\*|__|\*|_)(\S.*?\S|\S)\1", r"\2", text)  # emphasis
    text = text.strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of `page`, repeated headings numbered as the code host does."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for match in HEADING.finditer(prose(page.read_text())):
        base = anchor(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    """The link targets of `page` outside code, without web addresses."""
    text = CODE_SPAN.sub("", prose(page.read_text()))
    return [target for target in LINK.findall(text)
            if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.I)]


def test_anchor_rules():
    assert anchor("Regions and Home Assistant sensors") == "regions-and-home-assistant-sensors"
    assert anchor("MQTT (fleets of Pis, Home Assistant, Node-RED)") == \
        "mqtt-fleets-of-pis-home-assistant-node-red"
    assert anchor("The Pi user's path on an emulated Pi 4: `make e2e-arm`") == \
        "the-pi-users-path-on-an-emulated-pi-4-make-e2e-arm"
    assert anchor("Several cameras: batching, throughput, memory") == \
        "several-cameras-batching-throughput-memory"


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; keep it at most {README_MAX_LINES} and move the "
        f"rest to a page under docs/")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_relative_links_and_anchors_resolve(page):
    broken = []
    for target in relative_links(page):
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(REPO)}")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_readme_links_every_docs_page():
    linked = {(README.parent / target.partition("#")[0]).resolve()
              for target in relative_links(README)}
    missing = [page.name for page in DOCS.glob("*.md") if page.resolve() not in linked]
    assert not missing, f"README.md links none of docs/{', docs/'.join(missing)}"


def code_map() -> list[str]:
    """The entries of the code map in docs/development.md as paths under pidaemon/ (`cli.py`,
    `model/xnnpack/`): one line each, the name first, indented two spaces under its package."""
    text = CODE_MAP.read_text()
    section = text[text.index("\n## The code\n"):]
    block = section[section.index("```\npidaemon/\n") + len("```\npidaemon/\n"):]
    block = block[:block.index("\n```")]
    entries: list[str] = []
    packages: list[str] = []  # the enclosing packages of the current line
    for line in block.splitlines():
        depth = (len(line) - len(line.lstrip(" "))) // 2 - 1
        name = line.split()[0]
        del packages[depth:]
        entries.append("".join(packages) + name)
        if name.endswith("/"):
            packages.append(name)
    return entries


def test_code_map_names_every_package_and_top_level_module():
    packages = [f"{init.parent.relative_to(PACKAGE).as_posix()}/"
                for init in PACKAGE.rglob("__init__.py") if init.parent != PACKAGE]
    modules = [path.name for path in PACKAGE.glob("*.py") if path.name != "__init__.py"]
    listed = set(code_map())
    missing = sorted(set(packages + modules) - listed)
    assert not missing, f"docs/development.md's code map misses {', '.join(missing)}"
    stale = sorted(entry for entry in listed if not (PACKAGE / entry).exists())
    assert not stale, f"docs/development.md's code map names {', '.join(stale)}, which are gone"
