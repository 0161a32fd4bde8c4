"""Real DIMSE peers for the tests, on 127.0.0.1 free ports, stopped by their own PID:
Orthanc's DICOM server, dcmtk's dcmqrscp with a private configuration, and a
pynetdicom storage SCP whose faults the test chooses."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

from servers import Orthanc, _Process, free_port, wait_until

CALLING_AE = "DT-TESTS"
RECEIVER_AE = "DT-RECEIVER"


def dataset_bytes(data: bytes) -> bytes:
    """The bytes of a Part-10 file after its file meta (group 0002), which any receiver rebuilds."""
    assert data[128:132] == b"DICM"
    group_length = int.from_bytes(data[140:144], "little")  # (0002,0000) UL, explicit VR LE
    return data[144 + group_length:]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class OrthancPacs(Orthanc):
    """Orthanc with its DICOM server (AE ``ORTHANC``) that knows the tests' AEs."""

    ae_title = "ORTHANC"

    def __init__(self, directory: Path, receiver_port: int) -> None:
        self.dicom_port = free_port()
        modality = {"Host": "127.0.0.1", "AllowEcho": True, "AllowFind": True, "AllowGet": True,
                    "AllowMove": True, "AllowStore": True}
        super().__init__(directory, extra_config={
            "DicomServerEnabled": True, "DicomAet": self.ae_title, "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True, "DicomCheckModalityHost": False,
            "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True,
            "DicomModalities": {
                "tests": {**modality, "AET": CALLING_AE, "Port": free_port()},
                "receiver": {**modality, "AET": RECEIVER_AE, "Port": receiver_port},
            },
            "DicomScpTimeout": 30, "DicomAssociationCloseDelay": 0,
        })

    @property
    def address(self) -> str:
        return f"dimse://{self.ae_title}@127.0.0.1:{self.dicom_port}"

    def start(self) -> OrthancPacs:
        # dcmtk (Orthanc's DICOM layer) sets TCP_NODELAY when this is in its environment: without
        # it, each answer waits out a delayed ACK (~40 ms per instance on loopback)
        saved = os.environ.get("TCP_NODELAY")
        os.environ["TCP_NODELAY"] = "1"
        try:
            super().start()
        finally:
            if saved is None:
                os.environ.pop("TCP_NODELAY")
            else:
                os.environ["TCP_NODELAY"] = saved
        wait_until(lambda: _port_open(self.dicom_port), what="Orthanc's DICOM port")
        return self


class Dcmqrscp(_Process):
    """dcmtk's query/retrieve SCP (AE ``DCMQRSCP``) over a private database and configuration."""

    ae_title = "DCMQRSCP"

    def __init__(self, directory: Path, receiver_port: int) -> None:
        super().__init__(directory)
        self.receiver_port = receiver_port
        self.database = directory / "db"

    @property
    def address(self) -> str:
        return f"dimse://{self.ae_title}@127.0.0.1:{self.port}"

    def load(self, files: list[Path]) -> None:
        """Index files into the database (dcmqridx), before the server starts."""
        self.database.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dcmqridx", str(self.database), *map(str, files)], check=True, capture_output=True)

    def start(self) -> Dcmqrscp:
        if shutil.which("dcmqrscp") is None:
            raise RuntimeError("dcmqrscp is not installed (apt-get install dcmtk)")
        self.database.mkdir(parents=True, exist_ok=True)
        config = self.directory / "dcmqrscp.cfg"
        config.write_text(
            f"NetworkTCPPort = {self.port}\nMaxPDUSize = 65536\nMaxAssociations = 16\n"
            f"HostTable BEGIN\ntests = ({CALLING_AE}, 127.0.0.1, {free_port()})\n"
            f"receiver = ({RECEIVER_AE}, 127.0.0.1, {self.receiver_port})\nHostTable END\n"
            "VendorTable BEGIN\nVendorTable END\n"
            f"AETable BEGIN\n{self.ae_title} {self.database} RW (200, 1024mb) ANY\nAETable END\n")
        self._spawn(["dcmqrscp", "-c", str(config)], self.directory / "dcmqrscp.log",
                    env={**os.environ, "TCP_NODELAY": "1"})
        wait_until(lambda: _port_open(self.port), what="dcmqrscp")
        return self


class FaultyStorageScp:
    """A pynetdicom storage SCP that keeps what it receives (SOP UID -> data set bytes) and
    injects faults: a failure status for chosen SOP UIDs, an abort on the n-th C-STORE,
    rejecting every other association, a success status for chosen SOP UIDs that it does not
    keep. Its image-level C-FIND answers with what it holds."""

    ae_title = "FAULTY"

    def __init__(self, fail_sops: set[str] = frozenset(), abort_at: int | None = None,
                 reject_every_other: bool = False, warn_sops: set[str] = frozenset(),
                 lose_sops: set[str] = frozenset()) -> None:
        self.port = free_port()
        self.fail_sops = set(fail_sops)
        self.warn_sops = set(warn_sops)  # stored, answered 0xB007 (data set does not match SOP class)
        self.abort_at = abort_at
        self.reject_every_other = reject_every_other
        self.lose_sops = set(lose_sops)  # answered 0x0000, not kept
        self.stored: dict[str, bytes] = {}
        self.series_of: dict[str, tuple[str, str]] = {}  # SOP UID -> (study, series) of what it holds
        self.requests = 0
        self.associations = 0
        self.open_now = self.most_open = 0  # associations established at once
        self.lock = threading.Lock()
        self.server = None

    @property
    def address(self) -> str:
        return f"dimse://{self.ae_title}@127.0.0.1:{self.port}"

    def start(self) -> FaultyStorageScp:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context("1.2.840.10008.1.1")
        ae.add_supported_context("1.2.840.10008.5.1.4.1.2.2.1")  # C-FIND: what it holds
        handlers = [(evt.EVT_C_STORE, self._store), (evt.EVT_REQUESTED, self._requested),
                    (evt.EVT_C_FIND, self._find), (evt.EVT_ESTABLISHED, self._opened),
                    (evt.EVT_RELEASED, self._closed), (evt.EVT_ABORTED, self._closed)]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        return self

    def _requested(self, event) -> None:
        with self.lock:
            self.associations += 1
            reject = self.reject_every_other and self.associations % 2 == 0
        if reject:  # after the C-ECHO check's association, every second one
            event.assoc.acse.send_reject(0x02, 0x01, 0x01)

    def _opened(self, event) -> None:
        with self.lock:
            self.open_now += 1
            self.most_open = max(self.most_open, self.open_now)

    def _closed(self, event) -> None:
        with self.lock:
            self.open_now -= 1

    def _find(self, event):
        from pydicom.dataset import Dataset

        query = event.identifier
        with self.lock:
            held = [(sop, *where) for sop, where in self.series_of.items()]
        for sop, study, series in held:
            if (str(query.get("StudyInstanceUID") or study), str(query.get("SeriesInstanceUID") or series)) != (
                    study, series):
                continue
            found = Dataset()
            found.QueryRetrieveLevel = "IMAGE"
            found.StudyInstanceUID, found.SeriesInstanceUID, found.SOPInstanceUID = study, series, sop
            yield 0xFF00, found
        yield 0x0000, None

    def _store(self, event) -> int:
        with self.lock:
            self.requests += 1
            number = self.requests
        sop = str(event.request.AffectedSOPInstanceUID)
        if self.abort_at is not None and number == self.abort_at:
            event.assoc.abort()
            return 0xA700
        if sop in self.fail_sops:
            return 0xA700
        from pydicom import dcmread
        from pynetdicom import _config

        if _config.STORE_RECV_CHUNKED_DATASET:  # set by the code under test, in this process
            data = dataset_bytes(Path(event.dataset_path).read_bytes())
            ds = dcmread(event.dataset_path, stop_before_pixels=True)
        else:
            data = event.encoded_dataset(include_meta=False)
            ds = event.dataset
        if sop in self.lose_sops:
            return 0x0000
        with self.lock:
            self.stored[sop] = data
            self.series_of[sop] = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
        return 0xB007 if sop in self.warn_sops else 0x0000

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()


class FaultyQrScp:
    """A pynetdicom query/retrieve SCP (Study Root C-FIND and C-GET) over Part-10 files, with
    faults: a failure status for one instance (it is left out of series retrievals and refused
    alone), an abort on the n-th C-STORE sub-operation, rejecting every other association."""

    ae_title = "FAULTY-QR"

    def __init__(self, files: list[Path], fail_sop: str | None = None, abort_at: int | None = None,
                 reject_every_other: bool = False) -> None:
        from pydicom import dcmread

        self.port = free_port()
        self.datasets = [dcmread(path) for path in files]
        self.fail_sop = fail_sop
        self.abort_at = abort_at
        self.reject_every_other = reject_every_other
        self.sent = 0
        self.associations = 0
        self.lock = threading.Lock()
        self.server = None

    @property
    def address(self) -> str:
        return f"dimse://{self.ae_title}@127.0.0.1:{self.port}"

    def start(self) -> FaultyQrScp:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context("1.2.840.10008.1.1")
        ae.add_supported_context("1.2.840.10008.5.1.4.1.2.2.1", ALL_TRANSFER_SYNTAXES[:2])
        ae.add_supported_context("1.2.840.10008.5.1.4.1.2.2.3", ALL_TRANSFER_SYNTAXES[:2])
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES, scu_role=False,
                                     scp_role=True)
        handlers = [(evt.EVT_C_FIND, self._find), (evt.EVT_C_GET, self._get),
                    (evt.EVT_REQUESTED, self._requested)]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        return self

    def _requested(self, event) -> None:
        with self.lock:
            self.associations += 1
            reject = self.reject_every_other and self.associations % 2 == 0
        if reject:
            event.assoc.acse.send_reject(0x02, 0x01, 0x01)

    def _matches(self, query) -> list:
        keys = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
        first, _, last = str(query.get("StudyDate") or "").partition("-")
        return [ds for ds in self.datasets
                if all(not query.get(k) or str(query.get(k)) == str(ds.get(k)) for k in keys)
                and (not first or first <= str(ds.StudyDate) <= (last or first))]

    def _find(self, event):
        from pydicom.dataset import Dataset

        query = event.identifier
        level = str(query.QueryRetrieveLevel)
        seen = set()
        for ds in self._matches(query):
            found = Dataset()
            found.QueryRetrieveLevel = level
            found.StudyInstanceUID = ds.StudyInstanceUID
            if level in ("SERIES", "IMAGE"):
                found.SeriesInstanceUID = ds.SeriesInstanceUID
            if level == "IMAGE":
                found.SOPInstanceUID = ds.SOPInstanceUID
                found.SOPClassUID = ds.SOPClassUID
            key = tuple(found.get(k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))
            if key not in seen:
                seen.add(key)
                yield 0xFF00, found
        yield 0x0000, None

    def _get(self, event):
        matches = self._matches(event.identifier)
        if [str(ds.SOPInstanceUID) for ds in matches] == [self.fail_sop]:
            yield 1
            yield 0xC000, None  # this one instance, asked for alone: a failure status
            return
        matches = [ds for ds in matches if str(ds.SOPInstanceUID) != self.fail_sop]
        yield len(matches)
        for ds in matches:
            with self.lock:
                self.sent += 1
                abort = self.sent == self.abort_at
            if abort:
                event.assoc.abort()
                return
            yield 0xFF00, ds

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
