"""docs/notebook.ipynb is made from the code by docs/make_notebook.py: regenerate, never hand-edit.

CI runs the notebook itself, headless, on the real data with a few epochs (.ci/run); here only
that the committed file is what the pieces make today, and that it imports nothing of the project.
"""

import json
import re
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "docs"))
import make_notebook  # noqa: E402


def test_the_committed_notebook_is_what_the_code_makes_it():
    assert make_notebook.NOTEBOOK.read_text() == make_notebook.notebook_text(), (
        "docs/notebook.ipynb differs from the code's pieces: run python docs/make_notebook.py")


def test_the_notebook_imports_nothing_of_the_project_and_has_no_outputs():
    notebook = json.loads(make_notebook.NOTEBOOK.read_text())
    project = {path.stem for path in ROOT.glob("*.py")}
    code = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    imported = {line.split()[1].split(".")[0] for source in code for line in source.splitlines()
                if line.startswith(("import ", "from "))}
    assert imported and not imported & project
    assert all(not cell.get("outputs") for cell in notebook["cells"])
    assert code[0].startswith("LATENT_DIMS = (2, 8)")  # the settings first, as .ci/run replaces them


def test_the_notebooks_size_is_what_docs_coursework_says():
    notebook = json.loads(make_notebook.NOTEBOOK.read_text())
    cells = notebook["cells"]
    counts = (len(cells), sum(cell["cell_type"] == "code" for cell in cells),
              sum(len("".join(cell["source"]).splitlines()) for cell in cells))
    text = make_notebook.COURSEWORK.read_text()
    stated = re.search(r"It is (\d+) cells, (\d+) of them code, (\d+) lines in all", text)
    assert counts == tuple(map(int, stated.groups()))
