"""Every checkpoint load goes through pretrain.checkpoint.load_checkpoint (weights_only=True, no unsafe fallback)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOADER = "pretrain/checkpoint.py"
CALL = re.compile(r"\btorch\s*\.\s*load\s*\(")        # spelled as a pattern so that this file does not match itself
UNSAFE = re.compile(r"weights_only\s*=\s*False|pickle\s*\.\s*loads?\s*\(|torch\s*\.\s*serialization\s*\.\s*load")


def _project_py_files() -> list[str]:
    """Tracked + untracked-but-not-ignored .py files (what the project ships), else a walk without hidden dirs."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
        return sorted(p for p in out if (REPO / p).is_file())
    except (OSError, subprocess.CalledProcessError):
        return sorted(str(p.relative_to(REPO)) for p in REPO.rglob("*.py")
                      if not any(part.startswith(".") for part in p.relative_to(REPO).parts))


def _hits(pattern: re.Pattern) -> list[str]:
    return [f"{f}:{i}: {line.strip()}" for f in _project_py_files()
            for i, line in enumerate((REPO / f).read_text(errors="replace").splitlines(), 1) if pattern.search(line)]


def test_torch_load_is_called_only_by_load_checkpoint():
    files = _project_py_files()
    assert LOADER in files and any(f.startswith("transfer/") for f in files) and len(files) > 50
    calls = [h for h in _hits(CALL) if not h.startswith(f"{LOADER}:")]
    assert calls == [], f"checkpoint loads outside {LOADER}: {calls}"
    code = [ln for ln in (REPO / LOADER).read_text().splitlines() if CALL.search(ln) and '"""' not in ln]
    assert len(code) == 1 and "weights_only=True" in code[0], code   # the one call, and it is the safe one


def test_no_unsafe_unpickling_anywhere():
    hits = [h for h in _hits(UNSAFE) if not h.startswith("tests/")]
    assert hits == [], f"unsafe loads: {hits}"
