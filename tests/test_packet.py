"""The submission packet (spec section 5), read back with pypdf: pages, numbering, sections,
attachments; a bad attachment is a usage error naming the file; no office suite needed."""

from __future__ import annotations

import io
import shutil
import stat

import pytest
from click.testing import CliRunner

from priorauth.cli.packet import packet
from tests.test_letters import DENIAL, DM, decide, dm_data, flat, render, write_yaml

pypdf = pytest.importorskip("pypdf")


@pytest.fixture(scope="module")
def criteria():
    from priorauth.criteria.policy import load_criteria

    return load_criteria()


def records_pdf(text: str, pages: int = 2, size: str = "a4") -> bytes:
    """A stand-in for scanned records: a Typst PDF of `pages` pages saying `text`."""
    import typst

    body = "\n#pagebreak()\n".join(f"{text}, record page {i + 1}" for i in range(pages))
    return typst.compile(f'#set page(paper: "{size}")\n{body}'.encode(), ignore_system_fonts=True, timestamp=1700000000)


def page_texts(data: bytes) -> list[str]:
    return [flat(p.extract_text() or "") for p in pypdf.PdfReader(io.BytesIO(data)).pages]


def run(*args):
    return CliRunner().invoke(packet, [str(a) for a in args], catch_exceptions=False)


def test_packet_sections_numbering_and_attachments(criteria):
    from priorauth.letters.packet import render_packet

    ref, det = decide(dm_data(), criteria)
    data = render_packet(det, attachments=[("biopsy.pdf", records_pdf("Perifascicular atrophy", 2)),
                                           ("labs.pdf", records_pdf("Creatine kinase 4850", 3, "us-letter"))])
    pages = page_texts(data)
    n = len(pages)
    assert n >= 8
    for i, text in enumerate(pages, 1):
        assert f"Page {i} of {n}" in text, (i, text[-120:])
    cover = pages[0]
    assert "FAX" in cover and "CONFIDENTIALITY NOTICE" in cover and f"{n} (including this cover sheet)" in cover
    assert "Anita Rao" in cover and "Medicare Part B" in cover
    joined = " ".join(pages)
    # DM is Original Medicare: a documentation-of-medical-necessity letter, criteria with their published basis
    assert "Policy section" in joined or "Published basis" in joined  # the payer's document, or the sources
    for section in ("Documentation of medical necessity", "Criteria checklist", "Index of enclosures"):
        assert section in joined
    assert "Muscle biopsy pathology report, 01/28/2025" in joined  # the index: record -> criterion
    assert pages[-5].startswith("Perifascicular atrophy, record page 1") or "Perifascicular atrophy, record page 1" in pages[-5]
    assert "Creatine kinase 4850, record page 3" in pages[-1]
    assert f"pages {n - 4}–{n - 3}" in joined and f"pages {n - 2}–{n}" in joined  # contents and index
    # the same input makes the same bytes (dates from the referral, no random ids)
    again = render_packet(det, attachments=[("biopsy.pdf", records_pdf("Perifascicular atrophy", 2)),
                                            ("labs.pdf", records_pdf("Creatine kinase 4850", 3, "us-letter"))])
    assert again == data


def test_packet_checklist_lists_each_criterion_with_status_and_citation(criteria):
    from priorauth.letters.packet import render_packet

    ref, det = decide(dm_data(), criteria)
    joined = " ".join(page_texts(render_packet(det)))
    for c in det.criteria():
        assert flat(c["label"]) in joined
    assert "Not met" in joined and "Met" in joined
    assert "Bohan A, Peter JB" in joined


def test_appeal_packet_goes_to_appeals(criteria):
    from priorauth.letters.packet import render_packet

    ref, det = decide(dm_data(), criteria)
    pages = page_texts(render_packet(det, kind="appeal", denial=DENIAL))
    # Original Medicare: the appeal is a redetermination, sent to the contractor's redetermination unit
    assert "Redeterminations" in pages[0] and "Prior Authorization" not in pages[0]
    assert "Response to the denial" in " ".join(pages)


def test_cli_packet_with_attachments_no_office_suite(tmp_path, monkeypatch):
    att = tmp_path / "records.pdf"
    att.write_bytes(records_pdf("Biopsy report", 1))
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    out = tmp_path / "packet.pdf"
    result = run(DM, "-o", out, "--attach", att, "--payer-fax", "1-800-555-0199")
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    pages = page_texts(out.read_bytes())
    assert "1-800-555-0199" in pages[0] and "Biopsy report" in pages[-1]
    assert f"Page {len(pages)} of {len(pages)}" in pages[-1]
    assert run(DM, "-o", out).exit_code == 2  # exists: --force needed
    assert run(DM, "-o", out, "--force").exit_code == 0


def test_cli_bad_attachment_is_exit_2_naming_the_file(tmp_path):
    bad = tmp_path / "notes.pdf"
    bad.write_text("this is not a PDF", encoding="utf-8")
    out = tmp_path / "packet.pdf"
    result = run(DM, "-o", out, "--attach", bad)
    assert result.exit_code == 2 and "notes.pdf" in result.output and "not a PDF" in result.output
    assert not out.exists()
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n garbage")
    result = run(DM, "-o", out, "--attach", broken)
    assert result.exit_code == 2 and "broken.pdf" in result.output
    result = run(DM, "-o", out, "--attach", tmp_path / "missing.pdf")
    assert result.exit_code == 2 and "missing.pdf" in result.output


def test_cli_packet_refuses_unmet_criteria_unless_draft(tmp_path):
    data = dm_data()
    data["findings"] = []
    ref = write_yaml(tmp_path, data)
    out = tmp_path / "p.pdf"
    result = run(ref, "-o", out)
    assert result.exit_code == 2 and "no packet written" in result.output and not out.exists()
    assert run(ref, "-o", out, "--draft").exit_code == 0
    assert "DRAFT" in " ".join(page_texts(out.read_bytes()))


def test_cli_packet_needs_pdf_name_and_denial_for_appeal(tmp_path):
    assert run(DM, "-o", tmp_path / "p.docx").exit_code == 2
    result = run(DM, "-o", tmp_path / "p.pdf", "--kind", "appeal")
    assert result.exit_code == 2 and "denial" in result.output


def test_cli_packet_takes_a_templates_folder(tmp_path):
    alt = tmp_path / "templates"
    shutil.copytree(render.TEMPLATES, alt)
    text = (alt / "letter-text.yaml").read_text(encoding="utf-8")
    (alt / "letter-text.yaml").write_text(text.replace("To the medical reviewer:", "Dear Reviewer:"), encoding="utf-8")
    out = tmp_path / "p.pdf"
    assert run(DM, "-o", out, "--templates", alt).exit_code == 0
    assert "Dear Reviewer:" in " ".join(page_texts(out.read_bytes()))
    other = tmp_path / "other"
    shutil.copytree(alt, other)
    (other / "packet.typ").unlink()
    result = run(DM, "-o", tmp_path / "q.pdf", "--templates", other)
    assert result.exit_code == 2 and "packet.typ" in result.output
