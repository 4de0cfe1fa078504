"""What the sweep tests share: the repository root and a tiny sweep file over the tiny models."""

from pathlib import Path

from tests.helpers import tiny_override

ROOT = Path(__file__).resolve().parents[2]


def write_sweep(tmp_path: Path, parameters: str, metric: str = "val/meteor", method: str = "grid",
                goal: str = "maximize", configs: tuple[Path, ...] = (), limits=(2, 2, 2)) -> Path:
    override = tiny_override(tmp_path / "tiny.yaml", tmp_path / "embeddings", limits=limits, max_new_tokens=4)
    layers = "".join(f"  - --config\n  - {path}\n" for path in configs)
    path = tmp_path / "sweep.yaml"
    path.write_text(f"""
name: tiny
method: {method}
metric: {{name: {metric}, goal: {goal}}}
parameters:
{parameters}
command:
  - ${{env}}
  - dep-lightning
  - fit
  - --config
  - {ROOT / 'configs' / 'quickstart.yaml'}
{layers}  - --config
  - {override}
  - ${{args}}
""")
    return path
