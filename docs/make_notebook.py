"""Make docs/notebook.ipynb from the code: the pieces docs/coursework.md lists, each in a cell of its own.

    python docs/make_notebook.py      # after changing any piece; a test fails until it is run

The notebook imports nothing of this repository, so it runs alone in Colab or Jupyter.
"""

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COURSEWORK = ROOT / "docs" / "coursework.md"
NOTEBOOK = ROOT / "docs" / "notebook.ipynb"

INTRODUCTION = """# A denoising autoencoder on Fashion-MNIST

The published recipe, trained at a 2-number and an 8-number code, with the figures an assignment
asks for. Every piece below is copied from the repository's code by `docs/make_notebook.py`, and
nothing of the repository is imported: this notebook runs alone. In Colab, *Runtime → Run all*;
with a GPU (*Runtime → Change runtime type*) it is much faster. The first cell holds what you may
change."""

SETTINGS = '''LATENT_DIMS = (2, 8)  # the code sizes to train
EPOCHS = 200  # the recipe's most; early stopping may end a run sooner
BATCH_SIZE = 4096  # the recipe's
DATA_DIR = "data"  # torchvision downloads Fashion-MNIST here the first time'''

TRAINING = '''device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
recipe = {**RECIPE, "epochs": EPOCHS, "batch_size": BATCH_SIZE}
torch.manual_seed(0)  # the split, the weights and the noise: the same numbers each run
images, labels = load_fashion_mnist(DATA_DIR, train=True)
clean, noisy, test_labels = noisy_test_set(DATA_DIR, recipe["noise_std"])  # 10,000 test images
models, histories = {}, {}
for latent_dim in LATENT_DIMS:
    (train_images, _), (val_clean, val_noisy) = training_split(images, labels, recipe["val_size"],
                                                               recipe["noise_std"])
    model = DenoisingAutoencoder(latent_dim).to(device)
    start = time.perf_counter()
    histories[latent_dim] = fit(model, train_images.to(device), val_noisy.to(device), val_clean.to(device),
                                recipe, quiet=True)  # the weights of the lowest validation loss
    models[latent_dim] = model.cpu()
    print(f"d = {latent_dim}: test MAE {model_mae(model, noisy, clean):.5f} after "
          f"{len(histories[latent_dim]['val_loss'])} epochs, {time.perf_counter() - start:.0f} s on {device}")'''

FIGURES = '''with torch.no_grad():
    codes = {latent_dim: model.encode(noisy) for latent_dim, model in models.items()}
    rows = {"clean": clean, "noisy": noisy}
    rows.update({f"DAE, {d} numbers": models[d].decode(codes[d]) for d in LATENT_DIMS})
plot_reconstructions(rows, test_labels)
for latent_dim in LATENT_DIMS:
    stopped_early = len(histories[latent_dim]["val_loss"]) < EPOCHS
    plot_loss_curves(histories[latent_dim], stopped_early=stopped_early).axes[0].set_title(f"d = {latent_dim}")
    if latent_dim == 2:
        plot_latent_grid(models[2], codes[2], test_labels)
    else:
        plot_latent_pairs(codes[latent_dim], test_labels)
plt.show()'''


def coursework_imports() -> str:
    """The imports block of docs/coursework.md's one-file route."""
    text = COURSEWORK.read_text()
    return re.search(r"```python\n(.*?)```", text[text.index("## Hand in one file"):], re.DOTALL).group(1).strip()


def coursework_pieces() -> dict[str, list[str]]:
    """docs/coursework.md's table of what to paste: file -> the names of its definitions, in order."""
    section = COURSEWORK.read_text().split("## Hand in one file")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `(\w+\.py)` \| (.+) \|$", section, re.MULTILINE)
    return {file: re.findall(r"`(\w+)`", names) for file, names in rows}


def definitions(file: str, names: list[str]) -> list[tuple[str, str]]:
    """(what it does, its source) for each named top-level definition of `file`, in the table's order."""
    source = (ROOT / file).read_text()
    lines, found = source.splitlines(), {}
    for node in ast.parse(source).body:
        name = node.targets[0].id if isinstance(node, ast.Assign) else getattr(node, "name", None)
        if name in names:
            first = min([node.lineno, *(decorator.lineno for decorator in getattr(node, "decorator_list", []))])
            docstring = ast.get_docstring(node) if not isinstance(node, ast.Assign) else None
            what = (docstring or f"`{name}`").split("\n\n")[0].replace("\n", " ")
            found[name] = (f"`{name}`: {what}" if docstring else what, "\n".join(lines[first - 1: node.end_lineno]))
    missing = set(names) - set(found)
    assert not missing, f"docs/coursework.md names {missing}, which {file} does not define"
    return [found[name] for name in names]


def cell(kind: str, text: str) -> dict:
    cell = {"cell_type": kind, "metadata": {}, "source": text.splitlines(keepends=True)}
    return {**cell, "execution_count": None, "outputs": []} if kind == "code" else cell


def notebook() -> dict:
    cells = [cell("markdown", INTRODUCTION), cell("code", SETTINGS), cell("code", coursework_imports())]
    for file, names in coursework_pieces().items():
        cells.append(cell("markdown", f"## From `{file}`"))
        for what, source in definitions(file, names):
            cells += [cell("markdown", what), cell("code", source)]
    cells += [cell("markdown", "## Train the recipe at each code size"), cell("code", TRAINING),
              cell("markdown", "## The figures: reconstructions, loss curves, the 2-D map, the 8-D codes"),
              cell("code", FIGURES)]
    for number, each in enumerate(cells):
        each["id"] = f"cell-{number}"  # fixed, so that the file changes only with the code
    metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                "language_info": {"name": "python"}, "colab": {"provenance": []}}
    return {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}


def notebook_text() -> str:
    return json.dumps(notebook(), indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    NOTEBOOK.write_text(notebook_text())
    print(f"wrote {NOTEBOOK.relative_to(ROOT)}")
