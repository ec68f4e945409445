"""DOCX -> PDF through LibreOffice headless (`soffice`), so the PDF is the DOCX letter, page for page.

Each conversion runs in its own private temporary folder (0700) with its own LibreOffice
profile (`-env:UserInstallation`), so conversions can run side by side and never touch the
user's profile; the folder, which briefly holds the letter, is removed afterwards. A
conversion that hangs is killed (its whole process group) after `timeout` seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from datetime import date as Date, datetime, timezone
from pathlib import Path
from typing import Optional

from ..core.errors import PriorAuthError

DEFAULT_TIMEOUT = 180.0


def soffice_path() -> Optional[str]:
    """The LibreOffice executable: $PRIORAUTH_SOFFICE, else soffice or libreoffice on PATH."""
    return os.environ.get("PRIORAUTH_SOFFICE") or shutil.which("soffice") or shutil.which("libreoffice")


def docx_to_pdf(docx: bytes, *, timeout: float = DEFAULT_TIMEOUT, source_date: Optional[str] = None) -> bytes:
    """Convert DOCX bytes to PDF bytes. PriorAuthError (exit 1) when LibreOffice is missing or fails.

    `source_date` (ISO date, the letter's date) is passed as SOURCE_DATE_EPOCH for
    LibreOffice versions that honour it in the PDF's metadata.
    """
    exe = soffice_path()
    if not exe:
        raise PriorAuthError("PDF letters need LibreOffice ('soffice'), which is not installed: install "
                             "libreoffice-writer-nogui (Debian/Ubuntu), or write --format docx instead")
    with tempfile.TemporaryDirectory(prefix="priorauth-pdf-") as tmp:
        work = Path(tmp)
        src = work / "letter.docx"
        src.write_bytes(docx)
        outdir = work / "out"
        cmd = [exe, "--headless", "--invisible", "--nologo", "--norestore", "--nodefault", "--nolockcheck",
               f"-env:UserInstallation={(work / 'profile').as_uri()}",
               "--convert-to", "pdf:writer_pdf_Export", "--outdir", str(outdir), str(src)]
        env = dict(os.environ, HOME=str(work))
        if source_date:
            epoch = datetime.combine(Date.fromisoformat(source_date), datetime.min.time(), timezone.utc)
            env["SOURCE_DATE_EPOCH"] = str(int(epoch.timestamp()))
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=env, cwd=work, start_new_session=True)
        except OSError as exc:
            raise PriorAuthError(f"cannot start LibreOffice ({exe}): {exc.strerror}") from None
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise PriorAuthError(f"LibreOffice did not convert the letter to PDF within {timeout:g} s") from None
        finally:
            if proc.poll() is None:
                _kill_group(proc)
        pdf = outdir / "letter.pdf"
        if proc.returncode != 0 or not pdf.is_file():
            detail = (err or b"").decode("utf-8", "replace").strip().splitlines()
            last = detail[-1] if detail else "no output"
            raise PriorAuthError(f"LibreOffice could not convert the letter to PDF (exit {proc.returncode}): {last}")
        data = pdf.read_bytes()
    if not data.startswith(b"%PDF"):
        raise PriorAuthError("LibreOffice wrote something that is not a PDF")
    return data


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the conversion's own process group (LibreOffice forks soffice.bin), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        pass
