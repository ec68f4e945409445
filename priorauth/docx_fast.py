"""Many letters from one .docx template, fast: prepare once, render only what changes.

`DocxTemplate(path).render(ctx); save()` (docxtpl) costs, for every letter: unzipping and
parsing the whole package, pre-processing document.xml with a few dozen regular
expressions, compiling the result into a Jinja template, rendering, re-serialising every
part and re-compressing all of them. For a batch of letters from one template, only the
rendered XML differs between letters. `FastDocx`:

* loads the template once and lets docxtpl's own `patch_xml` turn document.xml (and any
  header, footer or footnotes part that holds template tags) into Jinja source once;
* compiles that source once, in the caller's Jinja environment;
* per letter, renders it and applies docxtpl's own post-processing (`resolve_listing`,
  `fix_tables`, the docPr id renumbering, python-docx's serialisation), so the XML is the
  XML docxtpl would write;
* writes the zip itself: every part that does not change (styles, numbering, fonts, theme,
  images, relationships...) was deflated once and its compressed bytes and CRC are
  reused; only the rendered parts are deflated per letter.

The zip has the layout `zipfile` writes (same entry order, headers, deflate settings,
entry dates given by the caller), so a letter is byte-for-byte the one the slow path writes
once both stamp the same date. Templates that need per-letter packaging changes (an
`InlineImage`, a `Subdoc`, a hyperlink made with `build_url_id`, media replacement) are not
supported here: render those with docxtpl.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

_TAG = re.compile(r"\{[{%#]")
_BODY_MARK = b"<!--priorauth-docx-fast-body-->"
_PARA = re.compile(r"<w:p([ >])")
_CORE_PROPS = ("author", "comments", "identifier", "language", "subject", "title")  # as docxtpl.render_properties
_FOOTNOTES = "application/vnd.openxmlformats-officedocument.wordprocessingml.footnotes+xml"


_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_XPATHS: dict[str, Any] = {}


def _xpath(expr: str):
    if expr not in _XPATHS:
        from lxml import etree

        _XPATHS[expr] = etree.XPath(expr, namespaces={
            "w": _W, "wp": "http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing"})
    return _XPATHS[expr]


def _DOCPR(tree):
    return _xpath("//wp:docPr")(tree)


def _tables_need_fixing(tree) -> bool:
    """Would DocxTemplate.fix_tables change anything? It adds grid columns when a row has more
    cells than the grid, and removes them when no row spans the whole grid; both are decided
    here in XPath (C), so the common case, nothing to fix, costs no Python loop over cells."""
    for tbl in tree.iter(f"{{{_W}}}tbl"):
        cols = _xpath("count(w:tblGrid/w:gridCol)")(tbl)
        if _xpath(".//w:tr[count(w:tc) > $n]")(tbl, n=cols):
            return True
        spans = "count(w:tc) + sum(w:tc/w:tcPr/w:gridSpan/@w:val) - count(w:tc/w:tcPr/w:gridSpan)"
        if not _xpath(f".//w:tr[{spans} >= $n]")(tbl, n=cols):
            return True
    return False


@dataclass(frozen=True)
class _Entry:
    name: bytes
    flag_bits: int
    crc: int
    size: int
    data: bytes  # deflated (raw deflate stream, as zipfile writes it)


def _deflate(data: bytes) -> bytes:
    # What zipfile.ZipFile(..., ZIP_DEFLATED) does with the default level.
    c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def _entry(name: str, data: bytes) -> _Entry:
    try:
        raw, flags = name.encode("ascii"), 0
    except UnicodeEncodeError:
        raw, flags = name.encode("utf-8"), 0x800
    return _Entry(raw, flags, zlib.crc32(data), len(data), _deflate(data))


def write_zip(entries: Sequence[_Entry], date_time: tuple = (1980, 1, 1, 0, 0, 0),
              external_attr: int = 0o600 << 16) -> bytes:
    """A zip archive of pre-deflated entries, laid out exactly as `zipfile` lays it out."""
    y, mo, d, h, mi, s = date_time
    dosdate = (y - 1980) << 9 | mo << 5 | d
    dostime = h << 11 | mi << 5 | (s // 2)
    version, system = zipfile.DEFAULT_VERSION, 3  # zipfile's ZipInfo defaults on a POSIX system
    out = io.BytesIO()
    offsets = []
    for e in entries:
        offsets.append(out.tell())
        out.write(struct.pack(zipfile.structFileHeader, zipfile.stringFileHeader, version, 0, e.flag_bits,
                              zipfile.ZIP_DEFLATED, dostime, dosdate, e.crc, len(e.data), e.size,
                              len(e.name), 0))
        out.write(e.name)
        out.write(e.data)
    start = out.tell()
    for e, offset in zip(entries, offsets):
        out.write(struct.pack(zipfile.structCentralDir, zipfile.stringCentralDir, version, system, version, 0,
                              e.flag_bits, zipfile.ZIP_DEFLATED, dostime, dosdate, e.crc, len(e.data), e.size,
                              len(e.name), 0, 0, 0, 0, external_attr, offset))
        out.write(e.name)
    end = out.tell()
    out.write(struct.pack(zipfile.structEndArchive, zipfile.stringEndArchive, 0, 0, len(entries), len(entries),
                          end - start, start, 0))
    return out.getvalue()


class _Part:
    """One templated XML part: compiled once, rendered per letter."""

    def __init__(self, name: str, template: Any, encoding: str, kind: str):
        self.name = name
        self.template = template
        self.encoding = encoding
        self.kind = kind  # "header_footer" (re-parsed by python-docx) or "raw" (footnotes: bytes as rendered)


class FastDocx:
    """A docxtpl template prepared once; `render(context)` returns the .docx bytes.

    `jinja_env` and `autoescape` mean what they mean to `DocxTemplate.render`. The output
    equals `DocxTemplate(template).render(context, jinja_env, autoescape)` saved and
    re-zipped with every entry dated `date_time` (see `render`).
    """

    def __init__(self, template: str | Path | bytes, jinja_env: Any = None, autoescape: bool = False):
        from docx.opc.oxml import serialize_part_xml
        from docx.opc.part import XmlPart
        from docxtpl import DocxTemplate
        from jinja2 import Environment

        raw = template if isinstance(template, bytes) else Path(template).read_bytes()
        env = jinja_env if jinja_env is not None else Environment()
        if autoescape:
            env.autoescape = True  # as DocxTemplate.render does
        self._env = env
        self._serialize = serialize_part_xml

        # The working copy, for docxtpl's own pre- and post-processing helpers.
        tpl = DocxTemplate(io.BytesIO(raw))
        tpl.render_init()
        self._tpl = tpl
        body_src = _PARA.sub(r"\n<w:p\1", tpl.patch_xml(tpl.get_xml()))
        self._body = env.from_string(body_src)
        self._document_name = tpl.docx.part.partname.membername
        # document.xml around the body, serialised once. docxtpl puts the rendered body into
        # the document element and python-docx serialises the whole; moving the body there
        # drops its namespace declarations that the document element already makes, so the
        # same bytes are: prefix + body without those declarations + suffix.
        from lxml import etree

        self._parser = etree.XMLParser(recover=True)
        root = tpl.docx._element
        self._root_ns = dict(root.nsmap)
        body = root.body
        marker = etree.Comment(_BODY_MARK[4:-3].decode())
        root.replace(body, marker)
        self._prefix, self._suffix = serialize_part_xml(root).split(_BODY_MARK)
        root.replace(marker, body)

        # The reference package: docxtpl's render with everything that cannot vary between
        # letters done once (untemplated headers, footers, footnotes, core properties).
        ref = DocxTemplate(io.BytesIO(raw))
        ref.render_init()
        self._parts: list[_Part] = []
        for uri in (ref.HEADER_URI, ref.FOOTER_URI):
            for rel_key, part in list(ref.get_headers_footers(uri)):
                xml = ref.get_part_xml(part)
                encoding = ref.get_headers_footers_encoding(xml)
                patched = ref.patch_xml(xml)
                if _TAG.search(patched):
                    self._parts.append(_Part(part.partname.membername,
                                             env.from_string(_PARA.sub(r"\n<w:p\1", patched)), encoding,
                                             "header_footer"))
                else:
                    rendered = ref.render_xml_part(patched, part, {}, env)
                    ref.map_headers_footers_xml(rel_key, rendered.encode(encoding))
        for part in ref.docx.part.package.parts:
            if part.content_type != _FOOTNOTES or isinstance(part, XmlPart):
                continue  # docxtpl's footnote rendering only takes effect on plain (non-XML) parts
            blob = part.blob.decode("utf-8") if isinstance(part.blob, bytes) else part.blob
            patched = ref.patch_xml(blob)
            if _TAG.search(patched):
                self._parts.append(_Part(part.partname.membername,
                                         env.from_string(_PARA.sub(r"\n<w:p\1", patched)), "utf-8", "raw"))
            else:
                part._blob = ref.render_xml_part(patched, part, {}, env).encode("utf-8")
        core = ref.docx.core_properties
        initial = {p: getattr(core, p) for p in _CORE_PROPS}
        self._core: Optional[dict] = None
        if any(_TAG.search(v or "") for v in initial.values()):
            self._core = {p: env.from_string(v) for p, v in initial.items()}
            self._core_obj = tpl.docx.core_properties
            self._core_part = tpl.docx.part.package._core_properties_part  # noqa: SLF001
            self._core_name = self._core_part.partname.membername
        else:
            for p, v in initial.items():
                setattr(core, p, env.from_string(v).render({}))
        buf = io.BytesIO()
        ref.docx.save(buf)

        variable = {self._document_name} | {p.name for p in self._parts}
        if self._core is not None:
            variable.add(self._core_name)
        self._memo: dict[tuple[str, bytes], _Entry] = {}
        self._layout: list[Any] = []  # _Entry for a static part, str (name) for a rendered one
        with zipfile.ZipFile(buf) as z:
            for info in z.infolist():
                if info.filename in variable:
                    self._layout.append(info.filename)
                else:
                    self._layout.append(_entry(info.filename, z.read(info.filename)))

    # -------------------------------------------------------------- per letter

    def _render_xml(self, template: Any, context: Mapping[str, Any]) -> str:
        # DocxTemplate.render_xml_part after its from_string (re.sub(r"\n<w:p([ >])", r"<w:p\1") as replaces)
        xml = template.render(context).replace("\n<w:p ", "<w:p ").replace("\n<w:p>", "<w:p>")
        if "{_" in xml or "_}" in xml:
            xml = xml.replace("{_{", "{{").replace("}_}", "}}").replace("{_%", "{%").replace("%_}", "%}")
        # resolve_listing only rewrites tabs, newlines, \a and \f: without any it is the identity
        listing = "\n" in xml or "\t" in xml or "\a" in xml or "\f" in xml
        return self._tpl.resolve_listing(xml) if listing else xml

    def document_xml(self, context: Mapping[str, Any]) -> bytes:
        """word/document.xml for this context, as docxtpl + python-docx would write it."""
        from lxml import etree

        xml = self._render_xml(self._body, context)
        tree = etree.fromstring(xml, parser=self._parser)  # the parser DocxTemplate.fix_tables uses
        if _tables_need_fixing(tree):
            tree = self._tpl.fix_tables(xml)
        if "docPr" in xml:
            for i, elt in enumerate(_DOCPR(tree), start=1001):
                elt.attrib["id"] = str(i)  # DocxTemplate.fix_docpr_ids, counting from 1000 each render
        body = etree.tostring(tree, encoding="UTF-8")
        start = body.index(b">") + 1
        tag = body[:start]
        for prefix, uri in tree.nsmap.items():
            if self._root_ns.get(prefix) == uri:
                name = b"xmlns" if prefix is None else b"xmlns:" + prefix.encode()
                tag = tag.replace(b" " + name + b'="' + uri.encode() + b'"', b"", 1)
        return self._prefix + tag + body[start:] + self._suffix

    def parts(self, context: Mapping[str, Any]) -> dict[str, bytes]:
        """Every part that varies with the context: name -> bytes."""
        from docx.oxml.parser import parse_xml

        out = {self._document_name: self.document_xml(context)}
        for part in self._parts:
            xml = self._render_xml(part.template, context).encode(part.encoding)
            # header/footer: DocxTemplate.map_headers_footers_xml re-parses it into an XmlPart
            out[part.name] = self._serialize(parse_xml(xml)) if part.kind == "header_footer" else xml
        if self._core is not None:
            for prop, template in self._core.items():
                setattr(self._core_obj, prop, template.render(context))
            out[self._core_name] = self._core_part.blob
        return out

    def render(self, context: Mapping[str, Any], date_time: tuple = (1980, 1, 1, 0, 0, 0),
               external_attr: int = 0o600 << 16) -> bytes:
        """The .docx for this context; every zip entry dated `date_time`."""
        rendered = self.parts(context)
        entries = [e if isinstance(e, _Entry) else _entry(e, rendered[e]) if e == self._document_name
                   else self._deflated(e, rendered[e]) for e in self._layout]
        return write_zip(entries, date_time, external_attr)

    def _deflated(self, name: str, data: bytes) -> _Entry:
        # A small rendered part often comes out the same for many letters (a header that
        # only shows a DRAFT banner, a practice name): deflate each distinct one once.
        key = (name, data)
        entry = self._memo.get(key)
        if entry is None:
            if len(self._memo) >= 64:
                self._memo.pop(next(iter(self._memo)))
            entry = self._memo[key] = _entry(name, data)
        return entry
