"""The documentation stays true: its links resolve inside the repository and the package layout page
matches the package.

The ``>>>`` examples of README.md and docs/*.md run as doctests with the rest of the suite
(``--doctest-glob`` in pyproject.toml); these tests check what a doctest cannot.
"""

import ast
import re
from pathlib import Path

import pytest

from test_imports import MODULES, imported_modules

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"```.*?```", re.S)


def slug(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub's rule) gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = CODE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def links(page: Path) -> list[str]:
    return LINK.findall(CODE.sub("", page.read_text()))


def test_slug_follows_the_renderer_rule():
    assert slug("Speed: `calogan benchmark`") == "speed-calogan-benchmark"
    assert slug("A five-minute tour of the Python API") == "a-five-minute-tour-of-the-python-api"
    assert slug("Can the evaluation be fooled?") == "can-the-evaluation-be-fooled"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_are_relative_and_resolve_inside_the_repository(page):
    found = links(page)
    for target in found:
        assert "://" not in target and not target.startswith("mailto:"), f"{page.name}: {target} points outside the repository"
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.is_relative_to(ROOT), f"{page.name}: {target} leaves the repository"
        assert dest.exists(), f"{page.name}: {target}: no such file"
        if anchor:
            assert anchor in anchors(dest), f"{page.name}: {target}: {dest.name} has no heading with anchor #{anchor}"
    if page.parent.name == "docs":
        assert "../README.md" in found, f"{page.name} has no link back to the README"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md") if t.partition("#")[0]}
    assert set(PAGES[1:]) <= linked, f"not linked from README.md: {sorted(p.name for p in set(PAGES[1:]) - linked)}"


def direct_imports(name: str) -> set[str]:
    """The calogan modules ``name`` imports by name (the most specific module of each import),
    without the root package (``__version__``) and itself."""
    path = MODULES[name]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = imported_modules(node, name, path.name == "__init__.py")
        found |= {t for t in targets if not any(u.startswith(t + ".") for u in targets)}
    return found - {"calogan", name}


def layout_rows() -> dict[str, set[str]]:
    rows = {}
    for line in (ROOT / "docs" / "layout.md").read_text().splitlines():
        m = re.match(r"^\| `(calogan[\w.]*)` \|.*\| (.*) \|$", line)
        if m:
            rows[m.group(1)] = {f"calogan.{t}" for t in re.findall(r"`([\w.]+)`", m.group(2)) if t != "__version__"}
    return rows


def test_layout_page_lists_every_module_with_its_imports():
    rows = layout_rows()
    assert sorted(rows) == sorted(MODULES), (
        f"docs/layout.md lacks {sorted(set(MODULES) - set(rows))}, names gone {sorted(set(rows) - set(MODULES))}"
    )
    wrong = {
        name: sorted(t.removeprefix("calogan.") for t in direct_imports(name)) for name in MODULES if rows[name] != direct_imports(name)
    }
    assert not wrong, f"docs/layout.md: the imports of these modules are now {wrong}"
