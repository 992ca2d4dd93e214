"""A fake gs:// on local disk, for reading (and, through epath, writing) a bucket in tests.

Two ways into a bucket have to be faked. Python code (epath, and TFDS through it) gets
`etils.epath.testing.mock_epath`, with every gs://BUCKET/... path mapped to a local
directory. ArrayRecord's reader is C++ and opens gs:// objects with the Google Cloud
Storage client library, which talks to `CLOUD_STORAGE_EMULATOR_ENDPOINT` when that is set:
a small HTTP server on 127.0.0.1 answers the two requests a reader makes (object metadata
and byte ranges of an object, `?alt=media`) from the same local directory. Every request
it answers is recorded, so a test can see that the reader really went through the bucket.
"""

import contextlib
import http.server
import json
import os
import pathlib
import threading
import urllib.parse
from collections.abc import Iterator

from etils.epath import gpath, testing


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format, *args):
        del format, args

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        parts = url.path.split("/")
        # /storage/v1/b/BUCKET/o/OBJECT or /download/storage/v1/b/BUCKET/o/OBJECT
        if "b" not in parts or parts.index("b") + 3 >= len(parts):
            return self._send(400, b'{"error": {"code": 400, "message": "bad path"}}')
        at = parts.index("b")
        bucket, name = parts[at + 1], urllib.parse.unquote("/".join(parts[at + 3 :]))
        path = self.server.root / bucket / name
        media = urllib.parse.parse_qs(url.query).get("alt") == ["media"]
        self.server.requests.append((f"gs://{bucket}/{name}", media))
        if not path.is_file():
            return self._send(404, b'{"error": {"code": 404, "message": "no such object"}}')
        size = path.stat().st_size
        if not media:
            metadata = {"kind": "storage#object", "bucket": bucket, "name": name}
            metadata.update(size=str(size), generation="1", metageneration="1")
            return self._send(200, json.dumps(metadata).encode())
        start, end = 0, size - 1
        ranged = self.headers.get("Range")
        if ranged:
            first, last = ranged.split("=", 1)[1].split("-", 1)
            if first:  # bytes=a-b or bytes=a-
                start, end = int(first), min(int(last) if last else size - 1, size - 1)
            else:  # bytes=-n: the last n bytes
                start = max(size - int(last), 0)
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(max(end - start + 1, 0))
        headers = {"x-goog-generation": "1", "Content-Range": f"bytes {start}-{end}/{size}"}
        self._send(206 if ranged else 200, body, headers, content_type="application/octet-stream")

    def _send(self, code, body, headers=None, content_type="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: pathlib.Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.requests: list[tuple[str, bool]] = []


class FakeBuckets:
    """gs://BUCKET/PATH is `root / BUCKET / PATH`; `requests` lists (gs:// URL, is a read
    of bytes) for what the C++ client asked the emulator."""

    def __init__(self, root: pathlib.Path, server: _Server):
        self.root = root
        self._server = server

    @property
    def requests(self) -> list[tuple[str, bool]]:
        return list(self._server.requests)

    def local(self, url: str) -> pathlib.Path:
        """The local file or directory behind a gs:// URL."""
        if not url.startswith("gs://"):
            raise ValueError(f"{url} is not a gs:// URL")
        return self.root / url.removeprefix("gs://")


@contextlib.contextmanager
def fake_gcs(root: pathlib.Path, monkeypatch) -> Iterator[FakeBuckets]:
    """Within the block, gs:// reads and writes (epath) and reads (ArrayRecord) use `root`."""
    root = pathlib.Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    prefix = "gs://"

    def to_local(path) -> str:
        text = os.fspath(path)
        return os.fspath(root / text.removeprefix(prefix)) if text.startswith(prefix) else text

    def to_url(path: str) -> str:
        text = os.fspath(path)
        local_root = os.fspath(root) + os.sep
        return prefix + text.removeprefix(local_root) if text.startswith(local_root) else text

    def one(original, path, *args, **kwargs):
        return original(to_local(path), *args, **kwargs)

    def two(original, path, dst, *args, **kwargs):
        return original(to_local(path), to_local(dst), *args, **kwargs)

    def glob(original, pattern):
        return [to_url(p) for p in original(to_local(pattern))]

    def walk(original, top, **kwargs):
        for directory, dirs, files in original(to_local(top), **kwargs):
            yield to_url(directory), dirs, files

    server = _Server(root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # With TensorFlow installed epath would send gs:// to tf.io.gfile; the mock replaces
    # the other backends only.
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
    monkeypatch.setenv("CLOUD_STORAGE_EMULATOR_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    mocked = {name: one for name in ("exists", "isdir", "listdir", "makedirs", "mkdir", "open")}
    mocked.update({name: one for name in ("remove", "rmtree", "stat")})
    mocked.update({name: two for name in ("copy", "rename", "replace")})
    try:
        with testing.mock_epath(glob=glob, walk=walk, **mocked):
            yield FakeBuckets(root, server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
