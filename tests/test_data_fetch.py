"""`bench data fetch` against a local HTTP server on 127.0.0.1 serving a copy of the real Office
files in raw-GitHub layout: verified download, corrupted file, server dying mid-body, rerun."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.data.fetch import fetch, files_for, load_sources
from bench.errors import BenchError


class Handler(SimpleHTTPRequestHandler):
    dying: set[str] = set()  # URL paths whose body is cut off halfway

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        if self.path in self.dying:
            body = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # the server "dies" mid-download
            return
        super().do_GET()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, data_root):
    """A copy of the office files laid out as <repo>/<commit>/<path><file>, served on 127.0.0.1."""
    top = tmp_path_factory.mktemp("mirror")
    for f in files_for("office"):
        dest = top / f.repo / f.commit / f.path / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_root / f.folder / f.name, dest)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(top)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield top, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith("."))


def test_sources_table_matches_the_data_roots_sources_md(data_root):
    text = (data_root / "SOURCES.md").read_text()
    listed = dict((f"{folder}/{name}", s) for s, folder, name in re.findall(r"^([0-9a-f]{64})  ([^/\s]+)/(\S+)$", text, re.M))
    ours = {f"{f.folder}/{f.name}": f.sha256 for f in files_for("all")}
    assert ours == listed and len(ours) == 26
    for folder, entry in load_sources()["folders"].items():
        assert f"`{folder}/` | `{entry['repo']}` @ `{entry['commit']}` (`{entry['path']}`)" in text


def test_fetch_office_verifies_and_is_idempotent(mirror, data_root, tmp_path):
    _, url = mirror
    env = {**os.environ, "BENCH_DATA_MIRROR": url, "BENCH_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "bench", "data", "fetch", "office", "--data-root", str(tmp_path / "root")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "6 file(s) downloaded" in proc.stdout and str(tmp_path / "root") in proc.stdout
    for f in files_for("office"):
        assert sha(tmp_path / "root" / f.folder / f.name) == sha(data_root / f.folder / f.name) == f.sha256
    assert leftovers(tmp_path / "root") == []
    assert {s for _, s in fetch("office", tmp_path / "root", url)} == {"present"}  # a rerun downloads nothing


def test_corrupted_file_is_deleted_and_fails_with_one_line(mirror, tmp_path):
    top, url = mirror
    f = next(f for f in files_for("office") if f.name == "Office.text")
    served = top / f.repo / f.commit / f.path / f.name
    original = served.read_bytes()
    served.write_bytes(original[:100] + b"X" + original[101:])  # one byte changed
    try:
        env = {**os.environ, "BENCH_DATA_MIRROR": url}
        proc = subprocess.run([sys.executable, "-m", "bench", "data", "fetch", "amazon14_office_rechorus",
                               "--data-root", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    finally:
        served.write_bytes(original)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]  # progress lines of the verified files come before it
    assert last.startswith("error: sha256 mismatch") and proc.stderr.count("error") == 1, proc.stderr
    assert not (tmp_path / f.folder / f.name).exists() and leftovers(tmp_path) == []
    # the files before it in the table were verified and kept; a rerun fetches the rest
    assert fetch("office", tmp_path, url)[-1][1] == "downloaded"
    assert sha(tmp_path / f.folder / f.name) == f.sha256


def test_server_dying_mid_download_leaves_nothing_and_rerun_succeeds(mirror, tmp_path):
    _, url = mirror
    f = next(f for f in files_for("office") if f.name == "train.csv")
    Handler.dying.add(f"/{f.repo}/{f.commit}/{f.path}{f.name}")
    try:
        with pytest.raises(BenchError, match="train.csv .*nothing was written"):
            fetch("office", tmp_path, url)
    finally:
        Handler.dying.clear()
    assert not (tmp_path / f.folder / f.name).exists() and leftovers(tmp_path) == []
    results = fetch("office", tmp_path, url)
    assert ("downloaded" in {s for _, s in results}) and sha(tmp_path / f.folder / f.name) == f.sha256


def test_unknown_name_and_differing_local_file(mirror, tmp_path):
    _, url = mirror
    with pytest.raises(BenchError, match="nothing to fetch for 'nope'; valid: scientific, scientific_mm, office"):
        fetch("nope", tmp_path, url)
    target = tmp_path / "amazon14_office_rechorus" / "Office.item2index"
    target.parent.mkdir()
    target.write_text("local edits\n")
    with pytest.raises(BenchError, match="exists with another sha256.*--force"):
        fetch("office", tmp_path, url)
    fetch("office", tmp_path, url, force=True)
    assert sha(target) == files_for("office")[0].sha256


def test_missing_builtin_dataset_points_at_fetch(tmp_path):
    env = {**os.environ, "BENCH_HOME": str(tmp_path / "home"), "BENCH_DATA_ROOT": str(tmp_path / "empty")}
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--dataset", "office", "--models", "pop"],
                          capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert f"bench data fetch office --data-root {tmp_path / 'empty'}" in proc.stderr


def test_local_folder_mirror_in_data_root_layout(data_root, tmp_path):
    results = fetch("office", tmp_path, str(data_root))  # e.g. a copy of another machine's data root
    assert [s for _, s in results] == ["downloaded"] * 6
    assert all(sha(p) == sha(data_root / p.relative_to(tmp_path)) for p, _ in results)
