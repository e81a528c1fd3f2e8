"""README.md and docs/*.md: every relative link resolves, to a file and to a heading, and README
fits a first read."""

import re

import pytest

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def anchors(page) -> set[str]:
    """GitHub's anchors for the headings of a Markdown page: lower case, punctuation dropped, spaces to -."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_resolves(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor:
            assert anchor in anchors(linked), f"{page.name} links to {target}: no such heading"


def test_readme_fits_a_first_read_with_the_commands_early():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 120
    assert any(line.startswith("python train.py") for line in lines[:40])


def test_the_sizes_readme_gives_are_the_files():
    readme = (ROOT / "README.md").read_text()
    stated = re.search(r"`dae.py` \((\d+) lines\), the recipe and its loop `fit` the\s+first (\d+) lines of `train.py`",
                       readme)
    train = (ROOT / "train.py").read_text().splitlines()
    recipe_lines = next(number for number, line in enumerate(train) if line.startswith("# ---- The plumbing"))
    assert tuple(map(int, stated.groups())) == (len((ROOT / "dae.py").read_text().splitlines()), recipe_lines)
