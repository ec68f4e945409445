"""Build templates/letter.docx, the docxtpl template of every letter kind, with python-docx.

Run it after changing the layout, and commit both this script and the .docx it writes:

    .venv/bin/python templates/build_docx_templates.py

The template holds docxtpl's Jinja tags ({{ }}, {%p %} for whole paragraphs, {%tr %} for
table rows) over the context of priorauth.render.letter_context. Wording lives in
letter-text.yaml beside it; this file only lays the letter out. The output is byte-for-byte
reproducible (fixed zip dates and document properties), so a diff means a real change.
"""

from __future__ import annotations

import io
import sys
import zipfile
from datetime import datetime
from pathlib import Path

from docx import Document
from docx.enum.section import WD_ORIENT
from docx.enum.table import WD_TABLE_ALIGNMENT
from docx.enum.text import WD_ALIGN_PARAGRAPH, WD_TAB_ALIGNMENT
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.shared import Inches, Pt, RGBColor

HERE = Path(__file__).resolve().parent
FONT = "Arial"
ACCENT = RGBColor(0x1F, 0x4E, 0x79)
GREY = RGBColor(0x59, 0x59, 0x59)
RED = RGBColor(0xC0, 0x00, 0x00)
HEADER_FILL = "DCE6F1"
LABEL_FILL = "F2F5F9"
BORDER = "A6A6A6"
BUILT = datetime(2026, 1, 1)  # fixed document-property dates: the template is reproducible
TEXT_WIDTH = 7.0  # inches between the margins of a US Letter page with 0.75" margins


# ------------------------------------------------------------------ low-level helpers


def _set(el, tag: str, **attrs) -> OxmlElement:
    child = el.find(qn(tag))
    if child is None:
        child = OxmlElement(tag)
        el.append(child)
    for k, v in attrs.items():
        child.set(qn(k), str(v))
    return child


def shade(cell, fill: str) -> None:
    _set(cell._tc.get_or_add_tcPr(), "w:shd", **{"w:val": "clear", "w:color": "auto", "w:fill": fill})


def table_borders(table, color: str = BORDER, inside: bool = True, size: int = 4) -> None:
    tblPr = table._tbl.tblPr
    borders = _set(tblPr, "w:tblBorders")
    for edge in ("top", "left", "bottom", "right", "insideH", "insideV"):
        val = "single" if inside or edge in ("top", "left", "bottom", "right") else "nil"
        _set(borders, f"w:{edge}", **{"w:val": val, "w:sz": size, "w:space": 0, "w:color": color})


def no_borders(table) -> None:
    borders = _set(table._tbl.tblPr, "w:tblBorders")
    for edge in ("top", "left", "bottom", "right", "insideH", "insideV"):
        _set(borders, f"w:{edge}", **{"w:val": "nil"})


def cell_margins(table, top=40, bottom=40, left=80, right=80) -> None:
    mar = _set(table._tbl.tblPr, "w:tblCellMar")
    for side, v in (("top", top), ("bottom", bottom), ("left", left), ("right", right)):
        _set(mar, f"w:{side}", **{"w:w": v, "w:type": "dxa"})


def widths(table, inches: list[float]) -> None:
    table.autofit = False
    _set(table._tbl.tblPr, "w:tblLayout", **{"w:type": "fixed"})
    for col, w in zip(table.columns, inches):
        col.width = Inches(w)
    for row in table.rows:
        for cell, w in zip(row.cells, inches):
            cell.width = Inches(w)


def header_row(row) -> None:
    """Repeat this row at the top of each page the table runs onto."""
    _set(row._tr.get_or_add_trPr(), "w:tblHeader")


def no_split(row) -> None:
    _set(row._tr.get_or_add_trPr(), "w:cantSplit")


def rule_below(paragraph, color: str = "1F4E79", size: int = 12) -> None:
    bdr = _set(paragraph._p.get_or_add_pPr(), "w:pBdr")
    _set(bdr, "w:bottom", **{"w:val": "single", "w:sz": size, "w:space": 4, "w:color": color})


def field(paragraph, code: str, size: float | None = None) -> None:
    """A Word field (PAGE, NUMPAGES) that Word and LibreOffice fill in."""
    fld = OxmlElement("w:fldSimple")
    fld.set(qn("w:instr"), code)
    run = OxmlElement("w:r")
    if size:
        rpr = OxmlElement("w:rPr")
        sz = OxmlElement("w:sz")
        sz.set(qn("w:val"), str(int(size * 2)))
        rpr.append(sz)
        run.append(rpr)
    t = OxmlElement("w:t")
    t.text = "1"
    run.append(t)
    fld.append(run)
    paragraph._p.append(fld)


def spacing(paragraph, before: float = 0, after: float = 0) -> None:
    paragraph.paragraph_format.space_before = Pt(before)
    paragraph.paragraph_format.space_after = Pt(after)


# ------------------------------------------------------------------ the document


class Letter:
    def __init__(self) -> None:
        self.doc = Document()
        self._styles()
        self._page()

    # -- styles and page

    def _styles(self) -> None:
        styles = self.doc.styles
        normal = styles["Normal"]
        normal.font.name = FONT
        normal.font.size = Pt(10)
        rpr = normal.element.get_or_add_rPr()
        fonts = _set(rpr, "w:rFonts")
        for attr in ("w:ascii", "w:hAnsi", "w:cs", "w:eastAsia"):
            fonts.set(qn(attr), FONT)
        normal.paragraph_format.space_after = Pt(4)
        normal.paragraph_format.line_spacing = 1.1
        for name in ("Heading 2",):
            h = styles[name]
            h.font.name = FONT
            h.font.size = Pt(11)
            h.font.bold = True
            h.font.italic = False
            h.font.color.rgb = ACCENT
            hr = h.element.get_or_add_rPr()
            hf = _set(hr, "w:rFonts")
            for attr in ("w:ascii", "w:hAnsi", "w:cs", "w:eastAsia"):
                hf.set(qn(attr), FONT)
            for theme in ("w:asciiTheme", "w:hAnsiTheme", "w:cstheme", "w:eastAsiaTheme"):
                if hf.get(qn(theme)) is not None:
                    del hf.attrib[qn(theme)]
            h.paragraph_format.space_before = Pt(10)
            h.paragraph_format.space_after = Pt(3)
            h.paragraph_format.keep_with_next = True
        for name in ("List Bullet", "List Bullet 2", "List Number"):
            s = styles[name]
            s.font.name = FONT
            s.font.size = Pt(10)
            s.paragraph_format.space_after = Pt(2)

    def _page(self) -> None:
        sec = self.doc.sections[0]
        sec.orientation = WD_ORIENT.PORTRAIT
        sec.page_width, sec.page_height = Inches(8.5), Inches(11)
        sec.left_margin = sec.right_margin = Inches(0.75)
        sec.top_margin, sec.bottom_margin = Inches(0.6), Inches(0.7)
        sec.header_distance, sec.footer_distance = Inches(0.3), Inches(0.35)
        # Header: the DRAFT marking on every page (empty for a letter ready to send).
        hp = sec.header.paragraphs[0]
        hp.alignment = WD_ALIGN_PARAGRAPH.CENTER
        run = hp.add_run("{% if draft %}{{ text.draft_banner }}  ·  {{ referral_id }}{% endif %}")
        run.bold, run.font.size, run.font.color.rgb = True, Pt(11), RED
        # Footer: who the page is about, and page N of M (payers separate pages).
        fp = sec.footer.paragraphs[0]
        # The Footer style's own stops (centre 3.25", right 6.5") are cleared: one right stop at the margin.
        for stop in (3.25, 6.5):
            fp.paragraph_format.tab_stops.add_tab_stop(Inches(stop), WD_TAB_ALIGNMENT.CLEAR)
        fp.paragraph_format.tab_stops.add_tab_stop(Inches(TEXT_WIDTH), WD_TAB_ALIGNMENT.RIGHT)
        r = fp.add_run("{{ patient.name }}  ·  DOB {{ patient.birth_date }}  ·  Member ID {{ payer.member_id }}\tPage ")
        r.font.size, r.font.color.rgb = Pt(8), GREY
        field(fp, "PAGE", 8)
        r = fp.add_run(" of ")
        r.font.size, r.font.color.rgb = Pt(8), GREY
        field(fp, "NUMPAGES", 8)

    # -- building blocks

    def tag(self, text: str) -> None:
        """A paragraph holding only a {%p %} tag: docxtpl removes it when rendering."""
        self.doc.add_paragraph(text)

    def para(self, text: str = "", *, bold=False, italic=False, size=None, color=None, style=None,
             before=0, after=4, align=None, keep=False):
        p = self.doc.add_paragraph(style=style)
        if text:
            run = p.add_run(text)
            run.bold, run.italic = bold, italic
            if size:
                run.font.size = Pt(size)
            if color is not None:
                run.font.color.rgb = color
        spacing(p, before, after)
        if align:
            p.alignment = align
        if keep:
            p.paragraph_format.keep_with_next = True
        return p

    def heading(self, text: str) -> None:
        self.doc.add_heading(text, level=2)

    def bullets(self, loop: str, text: str, style: str = "List Bullet") -> None:
        self.tag(f"{{%p for {loop} %}}")
        self.para(text, style=style, after=2)
        self.tag("{%p endfor %}")

    def loop_table(self, headers: list[str] | None, loop: str, cells: list[str], inches: list[float],
                   *, label_col: bool = False, size: float = 9):
        """A table with an optional header row and one row per item of `loop`."""
        n = len(cells)
        rows = (1 if headers else 0) + 3
        t = self.doc.add_table(rows=rows, cols=n)
        t.alignment = WD_TABLE_ALIGNMENT.CENTER
        table_borders(t)
        cell_margins(t)
        i = 0
        if headers:
            for cell, text in zip(t.rows[0].cells, headers):
                p = cell.paragraphs[0]
                run = p.add_run(text)
                run.bold, run.font.size = True, Pt(size)
                spacing(p, 0, 0)
                shade(cell, HEADER_FILL)
            header_row(t.rows[0])
            i = 1
        t.rows[i].cells[0].paragraphs[0].add_run(f"{{%tr for {loop} %}}")
        for j, (cell, text) in enumerate(zip(t.rows[i + 1].cells, cells)):
            p = cell.paragraphs[0]
            spacing(p, 0, 0)
            run = p.add_run(text)
            run.font.size = Pt(size)
            if label_col and j == 0:
                run.bold = True
                shade(cell, LABEL_FILL)
        t.rows[i + 2].cells[0].paragraphs[0].add_run("{%tr endfor %}")
        for row in t.rows:  # a row never splits across pages (Word: "allow row to break" off)
            no_split(row)
        widths(t, inches)
        return t, t.rows[i + 1]

    # -- the letter

    def build(self) -> Document:
        self.draft_box()
        self.letterhead()
        self.addressing()
        self.appeal_route()
        self.history()
        self.label()
        self.appeal()  # an appeal answers the denial first
        self.request()
        self.continuation()  # a continuation shows the response right after what it asks for
        self.diagnosis()
        self.prior_therapy()
        self.criteria()
        self.literature()
        self.monitoring()
        self.closing()
        self.enclosures()
        props = self.doc.core_properties
        props.title = "{{ text.title }} - {{ referral_id }}"
        props.subject = "{{ text.title }}"
        props.author = "priorauth"
        props.last_modified_by = "priorauth"
        props.comments = ""
        props.keywords = ""
        props.category = ""
        props.created = props.modified = BUILT
        props.revision = 1
        return self.doc

    def draft_box(self) -> None:
        self.tag("{%p if draft %}")
        t = self.doc.add_table(rows=1, cols=1)
        table_borders(t, color="C00000", size=12)
        cell_margins(t, 80, 80, 140, 140)
        no_split(t.rows[0])
        cell = t.rows[0].cells[0]
        shade(cell, "FDECEA")
        p = cell.paragraphs[0]
        run = p.add_run("{{ text.draft_banner }}")
        run.bold, run.font.size, run.font.color.rgb = True, Pt(13), RED
        spacing(p, 0, 2)
        p = cell.add_paragraph()
        p.add_run("{{ text.draft_notice }}").font.size = Pt(9.5)
        spacing(p, 0, 2)
        cell.add_paragraph("{%p for m in missing %}")
        p = cell.add_paragraph(style="List Bullet")
        p.add_run("To document: {{ m }}").font.size = Pt(9.5)
        spacing(p, 0, 1)
        cell.add_paragraph("{%p endfor %}")
        cell.add_paragraph("{%p for r in reasons %}")
        p = cell.add_paragraph(style="List Bullet")
        p.add_run("Not met: {{ r }}").font.size = Pt(9.5)
        spacing(p, 0, 1)
        cell.add_paragraph("{%p endfor %}")
        widths(t, [TEXT_WIDTH])
        self.para("", after=2)
        self.tag("{%p endif %}")

    def letterhead(self) -> None:
        self.para("{{ letterhead.name }}", bold=True, size=15, color=ACCENT, after=1)
        self.tag("{%p for line in letterhead.lines %}")
        self.para("{{ line }}", size=9, color=GREY, after=0)
        self.tag("{%p endfor %}")
        rule_below(self.para("", after=10, size=4))

    def addressing(self) -> None:
        self.para("{{ letter_date }}", after=10)
        self.tag("{%p for line in recipient %}")
        self.para("{{ line }}", after=0)
        self.tag("{%p endfor %}")
        self.para("", after=6)
        p = self.para("", before=0, after=3, keep=True)
        r = p.add_run("RE:  ")
        r.bold = True
        r = p.add_run("{{ text.subject }}")
        r.bold = True
        t, _ = self.loop_table(None, "row in re_rows", ["{{ row.label }}", "{{ row.value }}"], [1.5, 5.5], size=9.5)
        no_borders(t)
        cell_margins(t, 10, 10, 0, 60)
        for cell in t.rows[1].cells:
            shade(cell, "FFFFFF")
        t.rows[1].cells[0].paragraphs[0].runs[0].font.color.rgb = GREY
        self.para("", after=4)
        self.para("{{ text.salutation }}", after=6)
        self.para("{{ text.opening }}", after=6)

    def request(self) -> None:
        self.heading("Request")
        self.loop_table(None, "row in request.rows", ["{{ row.label }}", "{{ row.value }}"], [1.9, 5.1],
                        label_col=True)

    def diagnosis(self) -> None:
        self.heading("Diagnosis")
        self.loop_table(["ICD-10-CM", "Description", "Onset"], "dx in diagnoses",
                        ["{{ dx.code }}", "{{ dx.description or '' }}", "{{ dx.onset_date or '' }}"],
                        [1.2, 4.5, 1.3])
        self.para("How the diagnosis was confirmed:", bold=True, before=6, after=2, keep=True)
        self.tag("{%p if confirmation %}")
        self.bullets("f in confirmation",
                     "{{ f.label }}{% if f.date %}, {{ f.date }}{% endif %}{% if f.result %}: {{ f.result }}{% endif %}")
        self.tag("{%p else %}")
        self.para("No confirming finding is documented yet.", italic=True)
        self.tag("{%p endif %}")

    def prior_therapy(self) -> None:
        self.heading("Prior and current therapy")
        self.tag("{%p if treatments %}")
        self.loop_table(["Drug", "Dose and route", "Dates", "Weeks", "Outcome", "Details"], "t in treatments",
                        ["{{ t.drug }}", "{{ t.dose or '' }}{% if t.route %}{% if t.dose %}, {% endif %}{{ t.route }}{% endif %}",
                         "{% if t.start_date %}{{ t.start_date }} to {{ t.end_date }}{% endif %}",
                         "{{ t.weeks or '' }}", "{{ t.outcome or 'not stated' }}", "{{ t.details or '' }}"],
                        [1.05, 1.3, 1.25, 0.5, 0.95, 1.95], size=8.5)
        self.tag("{%p else %}")
        self.para("No prior therapy is documented.", italic=True)
        self.tag("{%p endif %}")
        self.tag("{%p if contraindications %}")
        self.para("Documented contraindications:", bold=True, before=6, after=2, keep=True)
        self.bullets("c in contraindications",
                     "{{ c.what }}: {{ c.reason }}{% if c.date %} (documented {{ c.date }}){% endif %}")
        self.tag("{%p endif %}")

    def continuation(self) -> None:
        self.tag("{%p if continuation %}")
        self.heading("Objective response to treatment")
        self.para("{{ text.response_intro }}", after=4)
        self.tag("{%p if not continuation.has_baseline %}")
        self.para("{{ text.no_prior_course }}", italic=True, size=9)
        self.tag("{%p endif %}")
        self.loop_table(["Measure", "Before treatment", "Latest", "Change", "Assessment"], "m in continuation.measures",
                        ["{{ m.label }}{% if m.unit %} ({{ m.unit }}){% endif %}",
                         "{% if m.baseline %}{{ m.baseline }} on {{ m.baseline_date }}{% else %}-{% endif %}",
                         "{% if m.latest %}{{ m.latest }} on {{ m.latest_date }}{% else %}-{% endif %}",
                         "{% if m.change %}{{ m.change }}{% if m.change_percent %} ({{ m.change_percent }}){% endif %}{% else %}-{% endif %}",
                         "{{ m.verdict or '' }}"],
                        [1.85, 1.45, 1.45, 1.15, 1.1], size=9)
        self.tag("{%p if chart %}")
        self.para("{{ chart }}", before=6, after=0, align=WD_ALIGN_PARAGRAPH.CENTER)
        self.para("{{ text.chart_caption }}", italic=True, size=8.5, color=GREY, after=4,
                  align=WD_ALIGN_PARAGRAPH.CENTER)
        self.tag("{%p endif %}")
        self.tag("{%p endif %}")

    def appeal_route(self) -> None:
        self.tag("{%p if appeal %}")
        for k in ("appeal_route", "appeal_expedited", "appeal_reviewer"):
            self.tag(f"{{%p if text.{k} %}}")
            self.para(f"{{{{ text.{k} }}}}", after=6)
            self.tag("{%p endif %}")
        self.tag("{%p endif %}")

    def history(self) -> None:
        self.tag("{%p if history %}")
        self.heading("{{ text.history_heading }}")
        for expr in ("history.text", "history.course", "text.history_organs", "text.history_goal"):
            self.tag(f"{{%p if {expr} %}}")
            self.para(f"{{{{ {expr} }}}}", after=4)
            self.tag("{%p endif %}")
        self.tag("{%p if history.scores %}")
        self.para("{{ text.scores_intro }}", after=3, keep=True)
        self.loop_table(["Measure", "Most recent", "Date", "Previous"], "x in history.scores",
                        ["{{ x.label }}", "{{ x.value }}", "{{ x.date }}", "{{ x.previous or '-' }}"],
                        [2.3, 1.5, 1.0, 2.2], size=9)
        self.tag("{%p endif %}")
        self.tag("{%p endif %}")

    def label(self) -> None:
        self.tag("{%p if label %}")
        self.heading("{{ text.label_heading }}")
        self.para("{{ text.label }}", after=4)
        self.tag("{%p endif %}")

    def appeal(self) -> None:
        self.tag("{%p if appeal %}")
        self.heading("Response to the denial")
        self.para("{{ text.appeal_intro }}", after=4)
        self.tag("{%p for point in appeal.points %}")
        self.para("{{ loop.index }}. {{ point.label }}", bold=True, before=4, after=1, keep=True)
        self.tag("{%p if point.citation %}")
        self.para("{{ text.citation_label }}: {{ point.citation }}", italic=True, size=9, color=GREY, after=1, keep=True)
        self.tag("{%p endif %}")
        self.para("{{ point.answer }}", after=1)
        self.tag("{%p for item in point.support %}")
        self.para("{% if item.label != point.label %}{{ item.label }}: {% endif %}{{ item.reason }}",
                  style="List Bullet", after=1)
        self.bullets("e in item.evidence", "{{ e }}", style="List Bullet 2")
        self.tag("{%p endfor %}")
        self.tag("{%p endfor %}")
        self.tag("{%p if text.appeal_also_met %}")
        self.para("{{ text.appeal_also_met }}", before=4, after=4)
        self.tag("{%p endif %}")
        self.tag("{%p endif %}")

    def criteria(self) -> None:
        self.heading("Coverage criteria met")
        self.para("{{ text.criteria_intro }}", after=4)
        self.tag("{%p if criteria %}")
        t, row = self.loop_table(["Criterion", "Evidence in the record", "{{ text.criteria_source_header }}"], "c in criteria",
                                 ["{{ c.label }}", "{{ c.reason }}", "{{ c.citation or '' }}"],
                                 [1.75, 3.45, 1.8], size=8.5)
        label = row.cells[0]
        label.paragraphs[0].runs[0].bold = True
        label.add_paragraph("{%p if c.pathway and c.pathway != c.label %}")
        p = label.add_paragraph()
        r = p.add_run("Pathway: {{ c.pathway }}")
        r.italic, r.font.size, r.font.color.rgb = True, Pt(8), GREY
        spacing(p, 0, 0)
        label.add_paragraph("{%p endif %}")
        ev = row.cells[1]
        ev.add_paragraph("{%p for e in c.evidence %}")
        p = ev.add_paragraph(style="List Bullet")
        p.add_run("{{ e }}").font.size = Pt(8.5)
        spacing(p, 0, 0)
        ev.add_paragraph("{%p endfor %}")
        src = row.cells[2].paragraphs[0].runs[0]
        src.font.color.rgb = GREY
        src.font.size = Pt(8)
        self.tag("{%p endif %}")

    def literature(self) -> None:
        self.tag("{%p if literature %}")
        self.heading("Supporting literature")
        self.para("{{ text.literature_intro }}", after=2)
        self.bullets("l in literature", "{{ l.citation }}{% if l.pmid %} PMID {{ l.pmid }}.{% endif %}"
                     "{% if l.finding %} ({{ l.finding }}){% endif %}", style="List Number")
        self.tag("{%p endif %}")

    def monitoring(self) -> None:
        self.heading("Monitoring and safety plan")
        self.bullets("m in monitoring", "{{ m }}")

    def closing(self) -> None:
        self.para("{{ text.closing }}", before=8, after=6)
        self.heading("Attestation")
        self.para("{{ text.attestation }}", after=10, keep=True)
        self.para("Sincerely,", after=26, keep=True)
        self.para("______________________________", after=0, keep=True)
        self.para("{{ signature.name }}", bold=True, after=0, keep=True)
        self.tag("{%p if signature.specialty %}")
        self.para("{{ signature.specialty }}", after=0, keep=True)
        self.tag("{%p endif %}")
        self.tag("{%p if signature.organization %}")
        self.para("{{ signature.organization }}", after=0, keep=True)
        self.tag("{%p endif %}")
        self.para("NPI {{ signature.npi }}", after=0, keep=True)
        self.para("Date: {{ signature.date }}", after=6)

    def enclosures(self) -> None:
        self.heading("Enclosures")
        self.bullets("e in enclosures", "{{ e }}")


# ------------------------------------------------------------------ output


def reproducible(data: bytes) -> bytes:
    """Zip entries dated 1980-01-01 instead of now: rebuilding gives identical bytes."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            entry = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(entry, src.read(info.filename))
    return out.getvalue()


def main(out: Path = HERE / "letter.docx") -> Path:
    buf = io.BytesIO()
    Letter().build().save(buf)
    out.write_bytes(reproducible(buf.getvalue()))
    return out


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "letter.docx"))
