"""Run docs/notebook.ipynb headless as Colab would, its settings cell replaced (CI: the real data, 2 epochs)."""

import sys

import nbformat
from nbclient import NotebookClient

SETTINGS = 'LATENT_DIMS = (2, 8)\nEPOCHS = 2\nBATCH_SIZE = 4096\nDATA_DIR = "data"'

notebook = nbformat.read("docs/notebook.ipynb", as_version=4)
assert notebook.cells[1].source.startswith("LATENT_DIMS"), "the settings cell is not the first code cell"
notebook.cells[1].source = SETTINGS  # every other cell as committed
NotebookClient(notebook, timeout=600, kernel_name="python3").execute()
printed = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
figures = sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))
print(printed, f"{figures} figures", sep="")
sys.exit(0 if printed.count("test MAE") == 2 and figures == 5 else "NOTEBOOK: not two test MAEs and five figures")
