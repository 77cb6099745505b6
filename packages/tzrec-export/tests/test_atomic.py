"""Rename-based replace, recovery after a kill, and the output lock (tzrec.export.atomic)."""

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tzrec.export import atomic
from tzrec.export.atomic import OutputError, output_lock, recover, swap_in, unique_name


def make_dir(path: Path, content: str) -> Path:
    path.mkdir(parents=True)
    (path / "model.pt").write_text(content)
    (path / "sub").mkdir()
    (path / "sub" / "meta.json").write_text(content)
    return path


def tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text() for p in sorted(path.rglob("*")) if p.is_file()}


def test_swap_in_replaces_the_old_copy_and_leaves_nothing_beside_it(tmp_path):
    target = make_dir(tmp_path / "export", "old")
    new = make_dir(unique_name(target, atomic.TMP_TAG), "new")
    swap_in(new, target)
    assert tree(target) == {"model.pt": "new", "sub/meta.json": "new"}
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_unique_names_differ_between_calls(tmp_path):
    a, b = (unique_name(tmp_path / "out", atomic.TMP_TAG) for _ in range(2))
    assert a != b and a.name.startswith(f".out.tmp-{os.getpid()}-")


def test_a_failed_second_rename_puts_the_old_copy_back(tmp_path, monkeypatch):
    target = make_dir(tmp_path / "export", "old")
    new = make_dir(unique_name(target, atomic.TMP_TAG), "new")
    rename = os.rename

    def failing(src, dst):
        if Path(src) == new:
            raise OSError(errno.EIO, "Input/output error", str(src))
        rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", failing)
    with pytest.raises(OSError):
        swap_in(new, target)
    assert tree(target) == {"model.pt": "old", "sub/meta.json": "old"}


def kill_between_renames(target: Path) -> None:
    """Run swap_in in a child that dies (os._exit, no cleanup) right after the first rename."""
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from tzrec.export import atomic

        target = Path({str(target)!r})
        new = atomic.unique_name(target, atomic.TMP_TAG)
        new.mkdir()
        (new / "model.pt").write_text("new")
        rename = os.rename

        def dying(src, dst):
            rename(src, dst)
            if Path(dst).name.startswith(".export.old-"):
                os._exit(9)

        atomic.os.rename = dying
        atomic.swap_in(new, target)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr


def test_a_kill_between_the_renames_is_undone_on_the_next_start(tmp_path):
    target = make_dir(tmp_path / "export", "old")
    kill_between_renames(target)
    # what the kill leaves: no target, the old copy and the orphaned new one, both hidden
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "export" not in names
    assert any(n.startswith(".export.old-") for n in names)
    assert any(n.startswith(".export.tmp-") for n in names)
    with output_lock(target, "--export_dir"):
        recover(target)
    assert tree(target) == {"model.pt": "old", "sub/meta.json": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_recover_deletes_an_old_copy_when_the_new_one_is_in_place(tmp_path):
    target = make_dir(tmp_path / "export", "new")
    make_dir(unique_name(target, atomic.OLD_TAG), "old")  # killed before deleting it
    make_dir(unique_name(target, atomic.TMP_TAG), "half")
    (tmp_path / ".other.tmp-1-x").mkdir()  # another target's temporary: not ours
    recover(target)
    assert tree(target) == {"model.pt": "new", "sub/meta.json": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-1-x", "export"]


def test_a_second_writer_is_refused_naming_the_holder_pid(tmp_path):
    target = tmp_path / "export"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from tzrec.export.atomic import "
            f"output_lock\nwith output_lock(Path({str(target)!r}), 'x'):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError) as e, output_lock(target, "--export_dir"):
            pass
        line = str(e.value)
        assert "\n" not in line
        assert f"--export_dir {target} is being written by another tzrec process" in line
        assert f"(pid {holder.pid}," in line
    finally:
        holder.kill()
        holder.wait()
    # a killed holder's lock is free again
    with output_lock(target, "--export_dir"):
        assert (tmp_path / ".export.lock").read_text().strip() == str(os.getpid())
    assert not (tmp_path / ".export.lock").exists()


def test_os_errors_are_described_with_errno_and_path():
    err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/x.pt")
    assert atomic.describe_os_error(err) == (
        "[Errno 28 ENOSPC] No space left on device: /data/x.pt"
    )
