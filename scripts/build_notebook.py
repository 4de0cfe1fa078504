"""Writes notebooks/analysis.ipynb from the cells below (edit here, then run this script)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell("""# DEP ablation analysis

Reads every run directory under `RUNS` (see `docs/runs.md`), regenerates the paper's tables
and figures with `dep-lightning tables`' code, and looks inside the sparse autoencoder: which
latent units fire for which users, and how sparse the codes are.

Set `DEP_RUNS` (default `runs/ablation`, what `make ablation` writes) and `DEP_TABLES_OUT`
(default `tables`) before starting Jupyter, or edit the next cell."""),
    new_code_cell("""import os
from pathlib import Path

RUNS = Path(os.environ.get("DEP_RUNS", "runs/ablation"))
OUT = Path(os.environ.get("DEP_TABLES_OUT", "tables"))
RESAMPLES = int(os.environ.get("DEP_RESAMPLES", "1000"))
FIRE = 0.5  # an SAE unit "fires" on a review when its sigmoid activation exceeds this
print(f"runs: {RUNS.resolve()}  tables and figures: {OUT.resolve()}")"""),
    new_markdown_cell("## Tables\nBest per column in bold, second underlined; † marks p < 0.05 against the "
                      "reference row (paired bootstrap); empty cells are runs that do not exist."),
    new_code_cell("""from IPython.display import Markdown, display

from dep_lightning.results.command import make_tables
from dep_lightning.results.render import to_markdown
from dep_lightning.results.tables import Options

log = []
tables = make_tables([str(RUNS)], out=OUT, resamples=RESAMPLES, echo=log.append)
print(log[0])
options = Options(resamples=RESAMPLES)
for table in tables:
    display(Markdown(to_markdown(table, options)))"""),
    new_markdown_cell("## Figures\nThe K sweep (paper figures 2/5) and the unique vs non-unique user halves "
                      "(figure 3)."),
    new_code_cell("""from IPython.display import Image

figures = sorted(OUT.glob("*.png"))
for path in figures:
    print(path.name)
    display(Image(filename=str(path)))"""),
    new_markdown_cell("""## SAE latent usage per user

Every DEP test run with a sparse autoencoder saves `analysis/latents.npz`: per test sample, the
mean latent code of its his slots. Here: how many units fire per sample, which units never fire,
and which units characterise each user."""),
    new_code_cell("""import json

import numpy as np

latent_runs = []
for path in sorted(RUNS.rglob("analysis/latents.npz")):
    manifest = json.loads((path.parent.parent / "manifest.json").read_text())
    if manifest["ablation"].get("refinement") == "sae":
        latent_runs.append((path.parent.parent, manifest, np.load(path)))
print(f"{len(latent_runs)} SAE run(s) with latent codes")
if not latent_runs:
    raise SystemExit("no SAE runs with analysis/latents.npz under RUNS")
run_dir, manifest, data = latent_runs[0]
z, users = data["z"], data["user_id"]
print(f"run {run_dir}: {z.shape[0]} samples x {z.shape[1]} latent units, {len(set(users))} users")"""),
    new_code_cell("""firing = z > FIRE
per_sample = firing.sum(axis=1)
dead = int((~firing.any(axis=0)).sum())
print(f"units firing per sample: mean {per_sample.mean():.1f}, median {np.median(per_sample):.0f}, "
      f"max {per_sample.max()} of {z.shape[1]}")
print(f"mean activation {z.mean():.4f} (target rho in the SAE loss); units never firing: {dead} of {z.shape[1]}")

user_ids = sorted(set(users))
user_mean = np.stack([z[users == u].mean(axis=0) for u in user_ids])
rows = []
for u, code in zip(user_ids, user_mean):
    top = np.argsort(code)[::-1][:5]
    rows.append(f"| {u} | {int((users == u).sum())} | " + ", ".join(f"{i} ({code[i]:.2f})" for i in top) + " |")
display(Markdown("| user | samples | top units (mean activation) |\\n|---|---:|---|\\n" + "\\n".join(rows[:20])))"""),
    new_code_cell("""import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(15, 4))
axes[0].hist(per_sample, bins=min(30, max(1, int(per_sample.max()) + 1)), color="tab:blue")
axes[0].set(title=f"units firing per sample (> {FIRE})", xlabel="firing units", ylabel="samples")
axes[1].hist(z.ravel(), bins=50, color="tab:orange", log=True)
axes[1].set(title="all latent activations", xlabel="activation", ylabel="count (log)")
shown = np.argsort(user_mean.var(axis=0))[::-1][:32]  # the units that vary most across users
image = axes[2].imshow(user_mean[:, shown], aspect="auto", cmap="viridis")
axes[2].set(title="mean activation: users x most user-specific units", xlabel="unit (ranked)", ylabel="user")
fig.colorbar(image, ax=axes[2])
fig.tight_layout()
OUT.mkdir(parents=True, exist_ok=True)
fig.savefig(OUT / "sae_latents.png", dpi=120)
print(f"saved {OUT / 'sae_latents.png'}")"""),
]


def build() -> nbformat.NotebookNode:
    notebook = new_notebook(cells=CELLS)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


if __name__ == "__main__":
    path = Path(__file__).resolve().parents[1] / "notebooks" / "analysis.ipynb"
    nbformat.write(build(), path)
    print(f"wrote {path}")
