"""Debian's Orthanc as the PACS of the tests: a generated configuration, free ports, always stopped."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
from pydicom import Dataset, dcmread

from core.federated.processes import free_port

OUR_AE = "PNEUMOFL"
ORTHANC_AE = "ORTHANC"


class Orthanc:
    """One Orthanc process with its storage in ``folder``. It knows only ``OUR_AE`` at 127.0.0.1.

    Orthanc 1.10 has no setting for the address its DICOM server binds to; it accepts associations only from
    ``OUR_AE`` at 127.0.0.1 (``DicomCheckModalityHost``), and its HTTP API listens on loopback only.
    ``TCP_NODELAY=1`` asks its DICOM toolkit (DCMTK) for Nagle-free sockets: without it every DIMSE exchange
    waits about 40 ms for a delayed ACK (a C-ECHO takes 44 ms instead of 2).
    """

    def __init__(self, folder: Path, extra: dict | None = None) -> None:
        self.folder = folder
        self.extra = extra or {}  # configuration on top of the tests' (DICOM TLS, say)
        self.dicom_port, self.http_port = free_port(), free_port()
        self.process: subprocess.Popen | None = None

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> Orthanc:
        executable = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "pneumofl-tests",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAet": ORTHANC_AE,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False,
            "DicomAlwaysAllowMove": False,
            "DicomCheckModalityHost": True,
            "DicomModalities": {"pneumofl": [OUR_AE, "127.0.0.1", 11112]},
            "DicomAssociationCloseDelay": 0,
            "Plugins": [],
            "StableAge": 1,
        } | self.extra
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        with open(self.folder / "orthanc.log", "w", encoding="utf-8") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [executable, str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                env=os.environ | {"TCP_NODELAY": "1"},
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.rest}/system", timeout=1, trust_env=False).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Orthanc did not start: {(self.folder / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.2)

    def send_moves_to(self, port: int, ae: str = OUR_AE) -> None:
        """Where Orthanc sends C-MOVE's images for ``ae`` (its DicomModalities entry, changed at run time)."""
        reply = httpx.put(
            f"{self.rest}/modalities/pneumofl",
            json={"AET": ae, "Host": "127.0.0.1", "Port": port},
            trust_env=False,
            timeout=10,
        )
        reply.raise_for_status()

    def upload(self, path: Path) -> dict:
        reply = httpx.post(f"{self.rest}/instances", content=path.read_bytes(), trust_env=False, timeout=30)
        reply.raise_for_status()
        return reply.json()

    def instances(self, study_uid: str) -> list[Dataset]:
        """Every instance Orthanc holds in the study, as datasets read from its REST API."""
        studies = self._get("/studies?expand").json()
        (study,) = [s["ID"] for s in studies if s["MainDicomTags"]["StudyInstanceUID"] == study_uid]
        ids = [i["ID"] for i in self._get(f"/studies/{study}/instances").json()]
        return [dcmread(io.BytesIO(self._get(f"/instances/{i}/file").content)) for i in ids]

    def _get(self, route: str) -> httpx.Response:
        reply = httpx.get(f"{self.rest}{route}", trust_env=False, timeout=30)
        reply.raise_for_status()
        return reply

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
