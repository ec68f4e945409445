"""PDF letters through Typst: same letter as the DOCX, escaping, no office suite, stable bytes.

The DOCX (python-docx) and the PDF (pypdf) of each kind are read back and compared line by
line: every significant paragraph of the DOCX is in the PDF.
"""

from __future__ import annotations

import io
import re
import shutil

import pytest

from tests.test_letters import (DENIAL, DM, continuation_data, decide, dm_data, docx_text, flat, html_parse,
                                pdf_text, render, rituximab_data, run, weird_data)

pypdf = pytest.importorskip("pypdf")

KINDS = [("initial", dm_data, None), ("continuation", continuation_data, None), ("appeal", dm_data, DENIAL),
         ("rituximab", rituximab_data, None)]


@pytest.fixture(scope="module")
def criteria():
    from priorauth.criteria.policy import load_criteria

    return load_criteria()


def _quotes(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"')


def significant_lines(docx: bytes) -> list[str]:
    """DOCX paragraphs that carry content (not labels or short headings)."""
    lines = [re.sub(r"Page \d+ of \d+$", "", flat(line)) for line in docx_text(docx).splitlines()]
    return [line for line in lines if len(line) >= 20 and "____" not in line]


def _squash(text: str) -> str:
    """No whitespace at all: PDF text breaks lines after '/' and between cells."""
    return "".join(_quotes(text).replace("–", "-").split())


@pytest.mark.parametrize("name,make,denial", KINDS, ids=[k[0] for k in KINDS])
def test_pdf_and_docx_say_the_same(criteria, name, make, denial):
    ref, det = decide(make(), criteria)
    kind = name if name in ("initial", "continuation", "appeal") else "initial"
    docx = render.render_letter(ref, det, "docx", kind=kind, denial=denial)
    pdf = render.render_letter(ref, det, "pdf", kind=kind, denial=denial)
    assert pdf.startswith(b"%PDF")
    text = _squash(pdf_text(pdf))
    lines = significant_lines(docx)
    assert len(lines) > 15
    missing = [line for line in lines if _squash(line) not in text]
    assert not missing, f"{name}: in the DOCX, not the PDF: {missing}"


ODD = {"given_name": "Zoë Ñúñez 李", "family_name": "O'Brien & <Sons> #$*_[]\\`{}@ مريم"}


def odd_data() -> dict:
    data = weird_data()
    data["patient"].update(ODD)
    data["treatments"][0]["details"] = "#set page(width: 1cm) *x* _y_ $z$ [link] <label> @ref \\ `raw` {}"
    return data


def test_odd_characters_survive_every_format(criteria):
    ref, det = decide(odd_data(), criteria)
    name = f"{ODD['given_name']} {ODD['family_name']}"
    assert name in flat(docx_text(render.render_letter(ref, det, "docx")))
    assert name in "".join(html_parse(render.render_letter(ref, det, "html")).text)
    md = render.render_letter(ref, det, "md").decode()
    assert "O'Brien \\& \\<Sons\\> \\#$\\*\\_\\[\\]\\\\\\`\\{\\}@" in md and "李" in md and "مريم" in md
    pdf = render.render_letter(ref, det, "pdf")
    text = flat(pdf_text(pdf))
    assert "Zoë Ñúñez 李" in text and "O'Brien & <Sons> #$*_[]\\`{}@" in text
    assert "مريم" in text or "ميرم" in text  # RTL: extraction order may be visual
    # markup in a value is text: the page keeps its width and the words are there as typed
    assert "#set page(width: 1cm) *x* _y_ $z$ [link] <label> @ref" in text
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    assert all(abs(float(p.mediabox.width) - 612) < 1 for p in reader.pages)


def test_fonts_are_shipped_and_embedded(criteria):
    ref, det = decide(odd_data(), criteria)
    reader = pypdf.PdfReader(io.BytesIO(render.render_letter(ref, det, "pdf")))
    fonts = set()
    for page in reader.pages:
        for f in (page["/Resources"].get("/Font") or {}).values():
            fonts.add(str(f.get_object()["/BaseFont"]))
    assert any("Libertinus" in f for f in fonts) and any("Droid" in f for f in fonts), fonts
    shipped = render.TEMPLATES / "fonts"
    assert (shipped / "DroidSansFallback.ttf").is_file() and (shipped / "LICENSE-DroidSansFallback.txt").is_file()


def test_same_input_same_pdf_bytes_dated_the_letter(criteria):
    ref, det = decide(dm_data(), criteria)
    a = render.render_letter(ref, det, "pdf")
    assert a == render.render_letter(ref, det, "pdf")
    meta = pypdf.PdfReader(io.BytesIO(a)).metadata
    assert meta["/CreationDate"].startswith("D:" + ref.date.strftime("%Y%m%d"))


def test_pdf_written_with_no_office_suite_on_path(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("soffice") is None and shutil.which("libreoffice") is None
    out = tmp_path / "dm.pdf"
    result = run(DM, "-o", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"%PDF")
    assert "LibreOffice" not in result.output


def test_table_rows_stay_whole_across_pages(criteria):
    data = dm_data()
    base = data["treatments"][0]
    data["treatments"] = [dict(base, drug="methotrexate", details=f"trial {i}: " + "nausea and fatigue " * 12)
                          for i in range(14)] + data["treatments"]
    ref, det = decide(data, criteria)
    reader = pypdf.PdfReader(io.BytesIO(render.render_letter(ref, det, "pdf", draft=True)))
    pages = [flat(p.extract_text()) for p in reader.pages]
    for i in range(14):
        holder = [n for n, p in enumerate(pages) if f"trial {i}:" in p]
        assert len(holder) == 1
        row = pages[holder[0]]
        # the whole details cell is on the page its row starts on
        assert row.count("nausea and fatigue") >= 12 * (sum(f"trial {j}:" in row for j in range(14)))


def test_a_label_never_ends_a_page_without_its_list(criteria):
    """Histories long enough that the diagnosis table ends near the foot of page 2: in some of
    them the page break falls right after the table; "How the diagnosis was confirmed:" then
    moves to the next page with its list."""
    label, moved = "How the diagnosis was confirmed:", 0
    for sentences in range(100, 120):
        data = dm_data()
        data["clinical_summary"] = {"history": "Weakness of the hip girdle progressed over months. " * sentences}
        ref, det = decide(data, criteria)
        pdf = pypdf.PdfReader(io.BytesIO(render.render_letter(ref, det, "pdf")))
        pages = [flat(p.extract_text()) for p in pdf.pages]
        at = next(n for n, p in enumerate(pages) if label in p)
        assert re.search(re.escape(label) + r"\s*• \S", pages[at]), sentences  # its list follows, same page
        moved += "ICD-10-CM" not in pages[at]
    assert moved, "no history length put the page break next to the label: the test proves nothing"


def test_two_points_are_a_table_not_a_trend(criteria):
    ref, det = decide(continuation_data(), criteria)
    ctx = render.letter_context(ref, det, kind="continuation")
    keys = [s["key"] for s in ctx["continuation"]["series"]]
    assert keys == ["ck"]  # CK has 4 values; MMT-8 and CDASI only 2: no "trend" drawn for them


def test_custom_typst_template_gets_data_not_markup(criteria, tmp_path):
    ref, det = decide(odd_data(), criteria)
    tpl = tmp_path / "mine.typ"
    tpl.write_text('#let c = json(bytes(sys.inputs.ctx))\nPatient: #c.patient.name\n', encoding="utf-8")
    text = flat(pdf_text(render.render_letter(ref, det, "pdf", template=tpl)))
    assert "Zoë Ñúñez 李 O'Brien & <Sons>" in text
    bad = tmp_path / "bad.typ"
    bad.write_text("#let c = json(bytes(sys.inputs.ctx))\n#c.patient.nmae\n", encoding="utf-8")
    from priorauth.core.errors import InputError

    with pytest.raises(InputError, match="bad.typ"):
        render.render_letter(ref, det, "pdf", template=bad)


# ------------------------------------------------------------------ peer-to-peer sheet


@pytest.mark.parametrize("denial", [None, DENIAL], ids=["initial", "after-denial"])
def test_p2p_sheet_is_one_page_with_the_contested_criterion(criteria, denial):
    ref, det = decide(dm_data(), criteria)
    pdf = render.render_letter(ref, det, "pdf", kind="p2p", denial=denial)
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 1
    text = flat(reader.pages[0].extract_text())
    for heading in ("Peer-to-peer review sheet", "Contested criterion", "Key dates", "Policy wording", "Literature"):
        assert heading in text
    assert "PMID 24387253" in text or denial is None  # from the criteria source's text
    if denial:
        assert "Refractory to systemic corticosteroids" in text and "PA-2026-778812" in text
    assert "4,850" in text  # key labs


def test_cli_p2p_is_pdf_only(tmp_path):
    out = tmp_path / "p2p.pdf"
    result = run(DM, "-o", out, "--kind", "p2p")
    assert result.exit_code == 0, result.output
    assert len(pypdf.PdfReader(out).pages) == 1
    bad = run(DM, "-o", tmp_path / "p2p.docx", "--kind", "p2p")
    assert bad.exit_code == 2 and "PDF" in bad.output


def test_format_registry_complete_whichever_module_loads_first():
    import subprocess
    import sys

    code = ("import priorauth.letters.formats.pdf\nfrom priorauth.letters import formats\n"
            "print(','.join(formats.get(n).name for n in ('docx', 'pdf', 'html', 'md')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "docx,pdf,html,md"
