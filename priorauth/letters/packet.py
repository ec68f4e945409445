"""The submission packet (spec section 5): one PDF a payer can take by fax or portal.

Fax cover sheet, the letter, the criteria checklist and the index of enclosures are one Typst
document (templates/packet.typ) made from the letter model as data; each attached PDF follows,
with "Page X of N" stamped on its pages (a Typst-made overlay merged by pypdf), so every page
of the packet is numbered across the whole of it. The Typst part knows the attachments' page
counts, so it prints the right total and contents in a single compile.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

from ..core.errors import InputError

Attachment = Union[str, Path, tuple[str, bytes]]

STATUS_TEXT = {"met": "Met", "not_met": "Not met", "unknown": "Documentation missing"}
NOTICE = ("This fax contains protected health information that is privileged and confidential under HIPAA "
          "(45 CFR Parts 160 and 164). It is intended only for the named recipient. If you received it in "
          "error, notify the sender at the phone number above and destroy every page; any review, use or "
          "disclosure by anyone else is prohibited.")


def read_attachment(item: Attachment) -> tuple[str, bytes, Any]:
    """(name, bytes, PdfReader) of an attachment; InputError naming the file if it is not a readable PDF."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    if isinstance(item, tuple):
        name, data = item
    else:
        name = str(item)
        try:
            data = Path(item).read_bytes()
        except OSError as exc:
            raise InputError(f"{name}: cannot read the attachment: {exc.strerror}") from None
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise InputError(f"{name}: not a PDF file (--attach takes PDF files)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise InputError(f"{name}: the PDF is encrypted; attach an unprotected copy")
        pages = len(reader.pages)
        for page in reader.pages:
            _ = page.mediabox
    except InputError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{name}: not a readable PDF ({type(exc).__name__})") from None
    if pages == 0:
        raise InputError(f"{name}: the PDF has no pages")
    return name, data, reader


def _checklist(det, policy) -> list[dict]:
    from .render import us_dates

    rows = det.criteria()
    depth: dict[str, int] = {}
    has_children = {r["parent"] for r in rows if r["parent"]}
    out = []
    for r in rows:
        depth[r["id"]] = depth.get(r["parent"], -1) + 1 if r["parent"] else 0
        src = policy.sources.get(r["source"]) if policy and r["source"] else None
        out.append({"id": r["id"], "label": r["label"], "status": r["status"],
                    "status_text": STATUS_TEXT.get(r["status"], r["status"]), "depth": min(depth[r["id"]], 4),
                    "group": r["id"] in has_children, "reason": us_dates(r["reason"]) or "",
                    "evidence": [us_dates(e["summary"]) for e in r["evidence"]],
                    "citation": src.citation if src else None})
    return out


def _cite(out: list[dict], ctx: dict, det) -> list[dict]:
    """The checklist's citations as the letter prints them: the payer policy's own where the
    determination names it; never a non-US guideline as the policy."""
    from . import content

    lit = content.literature_table()
    view = content.det_view(det)
    own = content.payer_citations(view)
    doc = ctx["policy"].get("document")
    for c in out:
        if own.get(c["id"]):
            c["citation"] = own[c["id"]]
        elif doc is not None or content.non_us(c["citation"], lit):
            c["citation"] = None
        else:
            from .context import iso_dates

            c["citation"] = iso_dates(c["citation"])
    return out


def _record_name(kind: str, index: Optional[int], ref, words: dict) -> Optional[str]:
    from .render import us_date

    try:
        if kind == "finding":
            f = ref.findings[index]
            name = words["findings"].get(f.kind, {}).get("enclosure", f.kind.replace("_", " "))
            return f"{name}{', ' + us_date(f.date) if f.date else ''}"
        if kind == "treatment":
            t = ref.treatments[index]
            return f"Medication record: {t.drug}{', from ' + us_date(t.start_date) if t.start_date else ''}"
        if kind == "assessment":
            a = ref.assessments[index]
            label = (words["measures"].get(a.measure) or {}).get("label") or a.measure
            return f"Result: {label}, {us_date(a.date)}"
        if kind == "contraindication":
            c = ref.contraindications[index]
            return f"Documentation of the contraindication: {c.drug or (c.drug_class or '').replace('_', ' ')}"
        if kind == "diagnosis":
            d = ref.diagnoses[index]
            return f"Clinic note with the diagnosis {d.code}"
    except (IndexError, TypeError):
        return None
    return None


def _index(det, ref, words: dict) -> list[dict]:
    """Each record the determination relied on, with the criteria it supports."""
    supports: dict[str, list[str]] = {}
    if det.result is not None:
        for r, _ in det.result.walk():
            if r.status != "met" or r.children:
                continue
            for e in r.evidence:
                name = _record_name(e.kind, e.index, ref, words)
                if name:
                    labels = supports.setdefault(name, [])
                    if r.node.label not in labels:
                        labels.append(r.node.label)
    return [{"record": k, "supports": "; ".join(v), "where": "enclosed records"} for k, v in supports.items()]


def packet_context(determination, *, kind: Optional[str] = None, denial: Optional[Mapping[str, Any]] = None,
                   draft: bool = False, attachments: Iterable[tuple[str, int]] = (),
                   payer_fax: Optional[str] = None, letters=None) -> dict:
    """The letter model plus `packet`: cover rows, contents, checklist, index; attachments as (name, pages)."""
    from . import render

    letters = letters if letters is not None else render.default_letters()
    det, ref = determination, determination.referral
    kind = kind or ref.request.request_type
    ctx = letters.context(ref, det, kind=kind, draft=draft, denial=denial)
    words = letters.words
    pres = ctx["prescriber"]
    attachments = list(attachments)
    if ctx.get("appeal"):
        desk = ctx["appeal"]["route"]["department"]
        payer_fax = payer_fax or ctx["appeal"]["route"].get("fax")
    elif ctx.get("record_only"):  # Original Medicare: no prior authorization; records for medical review
        desk = "Medical Review"
    else:
        desk = "Prior Authorization / Utilization Management"
    cover = [
        ("To", f"{ctx['payer']['name']}, {desk}"),
        ("To fax", payer_fax or "not on file: write the payer's fax number here before sending"),
        ("From", ", ".join(x for x in (pres["name"], pres["organization"]) if x)),
        ("From phone", pres["phone"] or ""), ("From fax", pres["fax"] or ""),
        ("Date", ctx["letter_date"]),
        ("Patient", f"{ctx['patient']['name']}, DOB {ctx['patient']['birth_date']}"),
        ("Member ID", ctx["payer"]["member_id"]),
        ("Re", ctx["text"]["subject"]),
        ("Pages", "__TOTAL__"),
    ]
    index = _index(det, ref, words)
    for i, (name, pages) in enumerate(attachments, 1):
        index.append({"record": f"Attachment {i}: {Path(name).name}", "supports": "records enclosed with this request",
                      "where": "__ATTACHMENT__"})
    ctx["packet"] = {
        "cover": {"rows": [{"label": a, "value": b} for a, b in cover if b], "notice": NOTICE},
        "contents": [],  # filled by the template from where each section lands
        "checklist": _cite(_checklist(det, det.policy), ctx, det),
        "checklist_intro": (f"Each criterion of {ctx['policy_name']}, its status on "
                            f"{ctx['letter_date']}, the evidence in the record and the policy's citation. "
                            "Where the policy offers alternatives, any one met is enough."
                            if det.policy else "No coverage policy applies to this request."),
        "index": index,
        "index_intro": "Which record supports which criterion; the records follow this page.",
        "attachments": [{"name": Path(n).name, "pages": p} for n, p in attachments],
        "extra_pages": sum(p for _, p in attachments),
    }
    return ctx


def _stamp(root: Path, pages: list[tuple[float, float]], first: int, total: int, footer: str) -> bytes:
    """One overlay page per attachment page (its own size) carrying the packet footer."""
    from .formats.pdf import compile_typst

    data = {"pages": [{"w": w, "h": h, "n": first + i} for i, (w, h) in enumerate(pages)],
            "total": total, "footer": footer, "letter_date_iso": None}
    return compile_typst(root / "stamp.typ", data)


def render_packet(determination, *, kind: Optional[str] = None, denial: Optional[Mapping[str, Any]] = None,
                  attachments: Iterable[Attachment] = (), draft: bool = False,
                  payer_fax: Optional[str] = None, letters=None) -> bytes:
    """The whole packet as PDF bytes. InputError names an attachment that is not a readable PDF.

    `attachments`: paths, or (name, bytes) pairs; `letters`: a prepared Letters (templates folder).
    """
    from pypdf import PdfReader, PdfWriter

    from . import render
    from .formats.pdf import compile_typst

    letters = letters if letters is not None else render.default_letters()
    read = [read_attachment(a) for a in attachments]
    ctx = packet_context(determination, kind=kind, denial=denial, draft=draft, payer_fax=payer_fax,
                         attachments=[(n, len(r.pages)) for n, _, r in read], letters=letters)
    main = compile_typst(letters.dir / "packet.typ", ctx, extra={"extra_pages": str(ctx["packet"]["extra_pages"])})
    own = PdfReader(io.BytesIO(main))
    total = len(own.pages) + ctx["packet"]["extra_pages"]
    writer = PdfWriter()
    writer.append(own)
    footer = f"{ctx['patient']['name']} · DOB {ctx['patient']['birth_date']} · Member ID {ctx['payer']['member_id']}"
    n = len(own.pages) + 1
    for name, _, reader in read:
        sizes = [(float(p.mediabox.width), float(p.mediabox.height)) for p in reader.pages]
        stamps = PdfReader(io.BytesIO(_stamp(letters.dir, sizes, n, total, footer)))
        for page, stamp in zip(reader.pages, stamps.pages):
            added = writer.add_page(page)
            added.merge_page(stamp)
        n += len(sizes)
    date = ctx["letter_date_iso"].replace("-", "")
    writer.add_metadata({"/Title": f"Submission packet {ctx['referral_id']}", "/Producer": "priorauth",
                         "/CreationDate": f"D:{date}000000Z", "/ModDate": f"D:{date}000000Z"})
    import hashlib

    ident = hashlib.md5(main + b"".join(d for _, d, _ in read)).digest()
    from pypdf.generic import ArrayObject, ByteStringObject

    writer._ID = ArrayObject([ByteStringObject(ident), ByteStringObject(ident)])
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
