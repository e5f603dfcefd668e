"""Write README.md from nbs/index.ipynb (what `nbdev_readme` does, without Quarto).

Usage: python docs/make_readme.py [--check]   (--check exits 1 when README.md is out of date)
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTE = "<!-- Generated from nbs/index.ipynb by docs/make_readme.py: edit the notebook, not this file. -->\n\n"


def readme_text(nb_path: Path = ROOT / "nbs" / "index.ipynb") -> str:
    "The README's text: the notebook's markdown cells, code cells fenced as python."
    cells = json.loads(nb_path.read_text(encoding="utf-8"))["cells"]
    parts = []
    for c in cells:
        src = "".join(c["source"]).strip()
        if not src or src.startswith("#|"): continue
        parts.append(src if c["cell_type"] == "markdown" else f"```python\n{src}\n```")
    return NOTE + "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    text, dest = readme_text(), ROOT / "README.md"
    if "--check" in sys.argv:
        sys.exit(0 if dest.read_text(encoding="utf-8") == text else 1)
    dest.write_text(text, encoding="utf-8")
