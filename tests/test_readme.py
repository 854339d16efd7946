"""The README's Python section runs as written and prints what it says."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end != -1 else None], flags=re.S)


def test_the_python_example_learns_from_events_and_chooses():
    (code,) = python_blocks("Python")
    assert len(code.strip().splitlines()) <= 12
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - our own README, not input
    expected = re.search(r"# (\S+)\s*$", code.strip()).group(1)
    assert out.getvalue().strip() == expected == "ad-b"
