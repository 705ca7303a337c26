"""Writing without ever leaving half a file: atomic files, atomic directory publishing."""

import os

import pytest

from kerasbert import files


def test_written_atomically_replaces_on_success_and_leaves_the_old_file_on_failure(tmp_path):
    path = tmp_path / "state.json"
    files.write_json(str(path), {"step": 1})
    with pytest.raises(RuntimeError):
        with files.written_atomically(str(path)) as temporary:
            with open(temporary, "w") as file:
                file.write('{"step": 2, "trunc')
            raise RuntimeError("killed while writing")
    assert files.read_json(str(path)) == {"step": 1}
    assert os.listdir(tmp_path) == ["state.json"], "the temporary file is gone"
    files.write_json(str(path), {"step": 2})
    assert files.read_json(str(path)) == {"step": 2}
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())


def test_temporary_files_are_new_files_never_existing_ones(tmp_path):
    first, second = (files.temporary_beside(str(tmp_path / "model.keras")) for _ in range(2))
    assert first != second and first.endswith("model.keras") and os.path.dirname(first) == str(tmp_path)


def test_publishing_over_a_version_swaps_it_in_one_step(tmp_path):
    final = tmp_path / "1"
    final.mkdir()
    (final / "saved_model.pb").write_text("old")
    staged = tmp_path / ".partial-1"
    staged.mkdir()
    (staged / "saved_model.pb").write_text("new")
    assert files.exchange(str(staged), str(final)) is True
    assert (final / "saved_model.pb").read_text() == "new" and (staged / "saved_model.pb").read_text() == "old"
    files.exchange(str(staged), str(final))
    files.publish_directory(str(staged), str(final), overwrite=True)
    assert (final / "saved_model.pb").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["1"], "no staged or retired folder left behind"


def current_umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_staging_removes_what_a_killed_writer_of_this_host_left_and_nothing_else(tmp_path):
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    left = {"killed": f".partial-2-{host}-{int(gone.stdout)}-abc", "alive": f".partial-2-{host}-{os.getpid()}-def",
            "other host": f".partial-2-{host}x-{int(gone.stdout)}-ghi", "published": "1"}
    for name in left.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "saved_model.pb").write_text("bytes")
    staged, final = files.staging_directory(str(tmp_path), 2, overwrite=False)
    assert final == str(tmp_path / "2") and os.path.basename(staged).startswith(f".partial-2-{host}-{os.getpid()}-")
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(staged), left["alive"], left["other host"], "1"])
