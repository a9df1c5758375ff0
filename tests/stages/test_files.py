"""stages.files on real folders: listing order, reading, and names that try to escape."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stages import files

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A folder with nested files, made in an order unlike their sorted order."""
    base = tmp_path / "root"
    for name in ("b/z.txt", "a.txt", "b/a.txt", "c/d/e.bin", "Z.txt"):
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
    (base / "empty_dir").mkdir()
    return base


class TestListFiles:
    def test_sorted_relative_posix_paths_without_directories(self, root):
        assert files.list_files(root) == ["Z.txt", "a.txt", "b/a.txt", "b/z.txt", "c/d/e.bin"]

    def test_pattern(self, root):
        assert files.list_files(root, "*.txt") == ["Z.txt", "a.txt"]
        assert files.list_files(root, "**/*.bin") == ["c/d/e.bin"]

    def test_bundled_images(self):
        listed = files.list_files(DATA, "images/*")
        assert len(listed) == 15 and listed == sorted(listed)
        assert "images/coffee.png" in listed

    def test_not_a_directory(self, root):
        with pytest.raises(NotADirectoryError, match=r"a\.txt"):
            files.list_files(root / "a.txt")


class TestSafePath:
    @pytest.mark.parametrize("name", ["../../etc/passwd", "..", "b/../../x", "c/d/../../../a.txt"])
    def test_dot_dot_escapes_are_refused(self, root, name):
        with pytest.raises(ValueError, match="escapes the folder"):
            files.safe_path(root, name)

    def test_absolute_paths_are_refused(self, root):
        with pytest.raises(ValueError, match="absolute path"):
            files.safe_path(root, "/etc/passwd")
        with pytest.raises(ValueError, match="absolute path"):
            files.safe_path(root, str(root / "a.txt"))  # even one inside root: names are relative

    def test_nul_bytes_and_empty_names_are_refused(self, root):
        with pytest.raises(ValueError, match="NUL"):
            files.safe_path(root, "a.txt\0.png")
        with pytest.raises(ValueError, match="does not name a file"):
            files.safe_path(root, "")

    def test_symlink_out_of_root_is_refused(self, root, tmp_path):
        outside = tmp_path / "secret.txt"
        outside.write_text("secret")
        os.symlink(outside, root / "link.txt")
        with pytest.raises(ValueError, match="escapes the folder"):
            files.safe_path(root, "link.txt")

    def test_names_that_stay_inside_are_resolved(self, root):
        assert files.safe_path(root, "b/../a.txt") == (root / "a.txt").resolve()
        assert files.safe_path(root, "new/file.txt") == (root / "new/file.txt").resolve()  # need not exist


class TestReadBytes:
    def test_read_inside_root(self, root):
        assert files.read_bytes("b/z.txt", root=root) == b"b/z.txt"

    def test_escape_is_refused_before_reading(self, root):
        with pytest.raises(ValueError, match="escapes"):
            files.read_bytes("../../../../etc/passwd", root=root)

    def test_size_cap(self, root):
        with pytest.raises(ValueError, match="exceeds the limit of 3"):
            files.read_bytes("a.txt", root=root, max_bytes=3)
        assert files.read_bytes(root / "a.txt", max_bytes=5) == b"a.txt"

    def test_missing_file_names_it(self, root):
        with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
            files.read_bytes("nope.txt", root=root)
