"""The ablated copy (bench.ablation) is what its figures say it is."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.ablation import CLIENT_API, EDITS, AblationError, Edit, ablate, main

REPOSITORY = Path(__file__).resolve().parents[2]


def _tree_with_client_api(tmp_path: Path) -> Path:
    (tmp_path / "actors").mkdir()
    shutil.copy(REPOSITORY / CLIENT_API, tmp_path / CLIENT_API)
    return tmp_path


def test_every_edit_applies_to_this_tree(tmp_path: Path) -> None:
    tree = _tree_with_client_api(tmp_path)
    ablate(tree)
    text = (tree / CLIENT_API).read_text()
    for edit in EDITS:
        assert edit.old not in text
        assert edit.new in text
    compile(text, CLIENT_API, "exec")


def test_a_missing_text_changes_no_file(tmp_path: Path) -> None:
    tree = _tree_with_client_api(tmp_path)
    before = (tree / CLIENT_API).read_text()
    missing = Edit(CLIENT_API, "no such line in the file\n", "")
    with pytest.raises(AblationError, match="0 copies"):
        ablate(tree, (*EDITS[:2], missing))
    assert (tree / CLIENT_API).read_text() == before


def test_a_text_found_twice_is_refused(tmp_path: Path) -> None:
    tree = _tree_with_client_api(tmp_path)
    with pytest.raises(AblationError, match="2 copies"):
        ablate(tree, (*EDITS, Edit(CLIENT_API, "# ablated\n", "")))


@pytest.mark.skipif(not (REPOSITORY / ".git").exists(), reason="not a git checkout")
def test_the_exported_copy_imports(tmp_path: Path) -> None:
    out = tmp_path / "ablated"
    assert main(["--commit", "HEAD", "--out", str(out), "--repository", str(REPOSITORY)]) == 0
    assert "methods = every_method  # ablated" in (out / CLIENT_API).read_text()
    imported = subprocess.run(
        [sys.executable, "-c", "import actors.client_api as m; print(m.__file__)"],
        env={"PYTHONPATH": str(out), "PATH": ""},
        cwd=out,
        capture_output=True,
        text=True,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    assert Path(imported.stdout.strip()) == out / CLIENT_API  # the copy, not the checkout
    assert main(["--out", str(out), "--repository", str(REPOSITORY)]) == 1  # not empty
