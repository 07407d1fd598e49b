"""No unsafe deserialisation or dynamic code execution in the package or the book.

Loading a pickle runs code chosen by whoever wrote the file, and so do ``torch.load`` without
``weights_only=True`` and Keras loading with ``safe_mode=False``. The course teaches readers to
load checkpoints; it must never model the unsafe way in its own code.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "companion").rglob("*.py")) + sorted((ROOT / "tools").rglob("*.py"))
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.md"))


def code_of(path: Path) -> str:
    if path.suffix == ".md":
        notebook = jupytext.read(path)
        cells = [c.source for c in notebook.cells if c.cell_type == "code"]
        # IPython magics are not Python; the chapters have none, but don't let one break parsing.
        return "\n".join(line for cell in cells for line in cell.splitlines() if not line.lstrip().startswith(("%", "!")))
    return path.read_text()


def unsafe_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        if name in ("eval", "exec", "builtins.eval", "builtins.exec"):
            found.append(f"{name}() at line {node.lineno}")
        if re.fullmatch(r"(c?pickle|dill|joblib|marshal|shelve)\.(load|loads|Unpickler|open)", name):
            found.append(f"{name}() at line {node.lineno}")
        if name.endswith("torch.load"):
            value = keywords.get("weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                found.append(f"{name}() without weights_only=True at line {node.lineno}")
        if "safe_mode" in keywords:
            value = keywords["safe_mode"]
            if not (isinstance(value, ast.Constant) and value.value is True):
                found.append(f"{name}(safe_mode=...) not True at line {node.lineno}")
        if name.endswith("numpy.load") or name in ("np.load", "numpy.load"):
            value = keywords.get("allow_pickle")
            if value is not None and not (isinstance(value, ast.Constant) and value.value is False):
                found.append(f"{name}(allow_pickle=...) at line {node.lineno}")
    return found


@pytest.mark.parametrize("path", SOURCES + CHAPTERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_unsafe_loading_or_dynamic_code(path):
    tree = ast.parse(code_of(path), filename=str(path))
    assert unsafe_calls(tree) == [], f"{path.relative_to(ROOT)} has unsafe calls"


@pytest.mark.parametrize(
    "snippet, expected",
    [
        ("import pickle\npickle.load(open('f', 'rb'))", "pickle.load()"),
        ("torch.load('f')", "torch.load() without weights_only=True"),
        ("torch.load('f', weights_only=False)", "torch.load() without weights_only=True"),
        ("keras.models.load_model('m.keras', safe_mode=False)", "safe_mode"),
        ("eval('1 + 1')", "eval()"),
        ("np.load('a.npy', allow_pickle=True)", "allow_pickle"),
    ],
)
def test_the_scan_finds_what_it_looks_for(snippet, expected):
    assert any(expected in finding for finding in unsafe_calls(ast.parse(snippet)))


def test_the_scan_accepts_the_safe_forms():
    safe = "torch.load('f', weights_only=True)\nkeras.models.load_model('m.keras')\nnp.load('a.npy')"
    assert unsafe_calls(ast.parse(safe)) == []
