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
  XML docxtpl would write. Parsing and re-serialising the body costs more than rendering
  it, and for an escaped template (autoescape, no Jinja inside a tag) it changes little:
  lxml writes empty elements as `<x/>` and the quotes markupsafe escapes as characters.
  Those two edits are made on the text instead, after checks that nothing else would
  change (no character or entity reference a parser would resolve, no carriage return,
  no table to fix, no drawing to renumber); anything else takes the lxml path;
* writes the zip itself: every part that does not change (styles, numbering, fonts, theme,
  images, relationships...) was deflated once and its compressed bytes and CRC are
  reused; only the rendered parts are deflated per letter.

The zip has the layout `zipfile` writes (same entry order, headers, deflate settings,
entry dates given by the caller), so a letter is byte-for-byte the one the slow path writes
once both stamp the same date. Templates that need per-letter packaging changes (an
`InlineImage`, a `Subdoc`, a hyperlink made with `build_url_id`, media replacement) are not
supported here, nor are context values that are XML themselves (`Markup`, docxtpl's
`RichText` or `Listing`): render those with docxtpl.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from collections import ChainMap
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


# The text path (_as_lxml_writes) works on the UTF-8 bytes with plain bytes
# searches, for speed: the body is ~40 KB of XML per letter and a regular expression trying
# every "<" costs as much as parsing.
_JINJA_IN_TAG = re.compile(r"<[^<>]*\{[{%#]")
_NOT_ESCAPED = re.compile(r"\|\s*safe\b|autoescape|\{[{%]r\s")
# Elements that can render empty: in the source, their content starts with a Jinja tag or
# is already empty (static content renders as itself).
_MAYBE_EMPTY = re.compile(r"<([A-Za-z_][\w.:-]*)(?:\s[^<>]*)?(?<!/)>(?:\{[{%#]|</\1>)")
# What a parser would not read back as written: characters XML cannot hold (U+FFFE and
# U+FFFF too: their lead byte is looked for first, one memchr where the regular expression
# is a slower pass), carriage returns (read as line feeds), references other than the escapes.
_NOT_XML_TEXT = bytes(range(0x09)) + b"\x0b\x0c\r" + bytes(range(0x0e, 0x20))
_NONCHARACTER = re.compile(rb"\xef\xbf[\xbe\xbf]")
_OTHER_REFERENCE = re.compile(rb"&(?!amp;|lt;|gt;|#39;|#34;)")
_SPAN = re.compile(rb'<w:gridSpan w:val="(\d+)"/>')
_QUOTE_ESCAPE = re.compile(rb"&#(?:39|34);")  # markupsafe's escaped quotes, which lxml writes as characters
_QUOTES = {b"&#39;": b"'", b"&#34;": b'"'}


def _unescape_quote(m: "re.Match[bytes]") -> bytes:
    return _QUOTES[m.group()]

_BLANK_TEXT = re.compile(rb">\s+<")


def _collapse_empty(data: bytes, name: bytes) -> bytes:
    """`<name ...></name>` -> `<name .../>`, as lxml writes an element without content."""
    close = b"></" + name + b">"
    at = data.find(close)
    if at < 0:
        return data
    out, done = [], 0
    while at >= 0:
        tag = data[data.rfind(b"<", 0, at) + 1:at]  # the tag this ">" ends
        if tag == name or (tag.startswith(name) and tag[len(name):len(name) + 1].isspace()
                           and not tag.endswith(b"/")):
            out += (data[done:at], b"/>")
            done = at + len(close)
        at = data.find(close, at + len(close))
    out.append(data[done:])
    return b"".join(out)


def _tables_need_fixing_text(data: bytes) -> Optional[bool]:
    """_tables_need_fixing read from the serialised body; None when the text cannot tell
    (a nested table, a table element with attributes, cells inside content controls, a
    grid span written some other way)."""
    if b"<w:tbl " in data or b"<w:tbl/>" in data:
        return None
    end = 0
    while (start := data.find(b"<w:tbl>", end)) >= 0:
        end = data.find(b"</w:tbl>", start)
        table = data[start + 7:end]
        if end < 0 or b"<w:tbl>" in table or b"<w:sdt" in table or b"<w:customXml" in table:
            return None
        cols = table.count(b"<w:gridCol ") + table.count(b"<w:gridCol/>")
        rows = table.split(b"</w:tr>")[:-1]  # each piece ends with one row
        if b"<w:tc " in table or b"<w:tc/>" in table or b"<w:gridSpan" in table:
            widths = []
            for row in rows:
                cells = row.count(b"<w:tc>") + row.count(b"<w:tc ") + row.count(b"<w:tc/>")
                spans = _SPAN.findall(row)
                if cells > cols or len(spans) != row.count(b"<w:gridSpan"):
                    return None if cells <= cols else True
                widths.append(cells + sum(int(v) for v in spans) - len(spans))
        else:  # the common case: plain cells, no spans; one count per row
            widths = [row.count(b"<w:tc>") for row in rows]
            if max(widths, default=0) > cols:
                return True
        if not any(w >= cols for w in widths):
            return True
    return False


# Block tags whose effect on the XML is only to repeat or drop what they enclose.
_BLOCK_TAG = re.compile(r"\{%[-+]?\s*(\w+)")
_REPEAT_OR_DROP = {"for": 1, "if": 1, "else": 0, "elif": 0, "endfor": -1, "endif": -1}


def _balanced(source: str) -> bool:
    """Do the block tags in `source` only repeat or drop parts of it, each closed inside it?"""
    depth = 0
    for name in _BLOCK_TAG.findall(source):
        step = _REPEAT_OR_DROP.get(name)
        if step is None:
            return False
        depth += step
        if depth < 0:
            return False
    return depth == 0


def _rigid_tables(source: str) -> bool:
    """Is every table of this body source rigid: each of its rows has exactly one plain cell
    per grid column, whatever the context? Then a rendered table can only need
    DocxTemplate.fix_tables when it has no row at all (_rows_missing), which is cheap to see.

    Rigid here: `<w:tbl>` and `<w:tr>` / `<w:tc>` without attributes, no nested table, no
    content control, custom XML or grid span; no template tag in the grid; block tags only
    for / if (balanced) and only between rows or inside one cell. Values cannot add
    elements: the text path runs only for an escaped template with no Jinja inside a tag.
    """
    if "<w:tbl " in source or "<w:tbl/>" in source or not _balanced(source):
        return False
    end = 0
    while (start := source.find("<w:tbl>", end)) >= 0:
        end = source.find("</w:tbl>", start)
        if end < 0:
            return False
        table = source[start + 7:end]
        grid_end = table.find("</w:tblGrid>")
        if (grid_end < 0 or _TAG.search(table, 0, grid_end) or any(
                bad in table for bad in ("<w:tbl>", "<w:sdt", "<w:customXml", "<w:gridSpan", "<w:tc ", "<w:tc/>",
                                         "<w:tr ", "<w:tr/>"))):
            return False
        if not _balanced(table):  # so blocks between rows repeat or drop whole rows
            return False
        cols = table.count("<w:gridCol ", 0, grid_end) + table.count("<w:gridCol/>", 0, grid_end)
        for _, row in _pieces(table[grid_end:], "<w:tr>", "</w:tr>"):
            if row is None:
                continue
            cells = list(_pieces(row, "<w:tc>", "</w:tc>"))
            if sum(cell is not None for _, cell in cells) != cols:
                return False
            if any(_TAG.search(outside) for outside, _ in cells) or not all(
                    _balanced(cell) for _, cell in cells if cell is not None):
                return False
    return True


def _pieces(text: str, start_tag: str, end_tag: str):
    """(text outside the elements, None) and (text between the tags of one element, its
    content) in order; elements of this kind must not nest."""
    at = 0
    while (start := text.find(start_tag, at)) >= 0:
        end = text.find(end_tag, start)
        if end < 0:
            yield text[at:], None
            return
        yield text[at:start], None
        yield "", text[start + len(start_tag):end]
        at = end + len(end_tag)
    yield text[at:], None


def _rows_missing(data: bytes) -> bool:
    """For a body whose tables are all rigid: does any rendered table have no row?"""
    end = 0
    while (start := data.find(b"<w:tbl>", end)) >= 0:
        end = data.find(b"</w:tbl>", start)
        if end < 0 or data.find(b"<w:tr>", start, end) < 0:
            return True
    return False


_TAG_TEXT = re.compile(r"\{[{%#].*?[}%#]\}", re.S)


def _jinja_source(patched: str, env: Any) -> str:
    """The Jinja source of a patched part. docxtpl puts a newline before every paragraph
    before compiling and takes "\n<w:p" out again after rendering (for its line-based tags).
    When the part has no newline of its own, no template tag spells "<w:p" and the
    environment has no line statements or other newline sequence, that round trip changes
    nothing: the newlines are left out, and rendering has none to take out (a pass saved)."""
    if ("\n" in patched or env.line_statement_prefix is not None or env.line_comment_prefix is not None
            or env.newline_sequence != "\n" or any("<w:p" in t for t in _TAG_TEXT.findall(patched))):
        return _PARA.sub(r"\n<w:p\1", patched)
    return patched


def _maybe_empty(source: str) -> list[bytes]:
    return sorted({name.encode() for name in _MAYBE_EMPTY.findall(source)})


def _as_lxml_writes(xml: str, maybe_empty: Sequence[bytes], body: bool = False, *,
                    rigid_tables: bool = False, drawings: bool = True) -> Optional[bytes]:
    """etree.tostring(etree.fromstring(xml)) for a rendered part, computed on the text, or
    None when only a parser can tell.

    For an escaped template with no Jinja inside a tag (checked when prepared), every value
    is escaped text between tags, and parsing and serialising changes only empty elements
    (`<x a="1"></x>` -> `<x a="1"/>`; `maybe_empty` names the elements that can render
    empty) and markupsafe's escaped quotes (`&#39;` `&#34;` -> `'` `"`). Anything else a
    parser resolves or normalises (character and entity references, carriage returns,
    characters XML cannot hold) and drawings (renumbered) answer None; so do the body's
    tables when DocxTemplate.fix_tables would change them (`body`). What the template alone
    settles is not searched for again in every letter: `rigid_tables` (_rigid_tables: only a
    table without rows needs fixing), `drawings=False` (no docPr in the template: values
    cannot make one).
    """
    try:
        data = xml.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: let lxml say what it says
        return None
    if ((drawings and b"docPr" in data) or len(data.translate(None, _NOT_XML_TEXT)) != len(data)
            or (b"\xef" in data and _NONCHARACTER.search(data)) or _OTHER_REFERENCE.search(data)
            or (body and (_rows_missing(data) if rigid_tables else _tables_need_fixing_text(data) is not False))):
        return None
    for name in maybe_empty:
        data = _collapse_empty(data, name)
    # each search is a pass over ~40 KB; "#" (one byte, memchr) is rare in a letter, and
    # when there is one, one pass of the expression finds both escapes (two replaces: two passes)
    return _QUOTE_ESCAPE.sub(_unescape_quote, data) if b"#" in data else data


def _escape_text(value: str) -> Optional[bytes]:
    """A text node's content as lxml writes it, or None for text lxml would refuse or change."""
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    if len(data.translate(None, _NOT_XML_TEXT)) != len(data) or _NONCHARACTER.search(data):
        return None
    return data.replace(b"&", b"&amp;").replace(b"<", b"&lt;").replace(b">", b"&gt;")


def _render(template: Any, context: Mapping[str, Any]) -> str:
    """template.render(context) without its two copies of the context (a dict of it, then
    another with Jinja's globals): a letter renders its parts from one big context, which a
    ChainMap shows the template with the same lookups. A template cannot write into it."""
    env = template.environment
    scope = template.new_context(ChainMap(context, template.globals), shared=True)  # type: ignore[arg-type]
    try:
        return env.concat(template.root_render_func(scope))
    except Exception:
        env.handle_exception()  # as Template.render: re-raises, with the template's traceback
        raise  # not reached


@dataclass(frozen=True)
class _Entry:
    name: bytes
    flag_bits: int
    crc: int
    size: int
    data: bytes  # deflated (raw deflate stream, as zipfile writes it)


# zlib's fastest level for what is deflated per letter: document.xml deflates in a third of
# the default level's time and comes out ~15% larger (a few KB). Parts of LARGE_PART bytes
# and more get the best level: in a template those are the styles (~800 KB of XML, ~70% of a
# letter's bytes at level 1), static, so FastDocx deflates them once; letters come out a
# third smaller. render.normalize_zip uses the same rule, so both paths write the same bytes.
DEFLATE_LEVEL = 1
LARGE_PART = 64 * 1024


def deflate_level(size: int) -> int:
    """The zlib level for a part of `size` bytes (uncompressed)."""
    return 9 if size >= LARGE_PART else DEFLATE_LEVEL


def _deflate(data: bytes) -> bytes:
    # What zipfile.ZipFile(..., ZIP_DEFLATED, compresslevel=deflate_level(len(data))) does.
    c = zlib.compressobj(deflate_level(len(data)), zlib.DEFLATED, -15)
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

    def __init__(self, name: str, template: Any, encoding: str, kind: str, source: str, text_path: bool):
        self.name = name
        self.template = template
        self.encoding = encoding
        self.kind = kind  # "header_footer" (re-parsed by python-docx) or "raw" (footnotes: bytes as rendered)
        # header_footer: python-docx's parse + serialise computed on the text when possible
        self.text_path = text_path and kind == "header_footer" and encoding.lower() in ("utf-8", "utf8") \
            and not _JINJA_IN_TAG.search(source) and not _NOT_ESCAPED.search(source)
        self.maybe_empty = _maybe_empty(source)


class FastDocx:
    """A docxtpl template prepared once; `render(context)` returns the .docx bytes.

    `jinja_env` and `autoescape` mean what they mean to `DocxTemplate.render`. The output
    equals `DocxTemplate(template).render(context, jinja_env, autoescape)` saved and
    re-zipped with every entry dated `date_time` (see `render`).
    """

    def __init__(self, template: str | Path | bytes, jinja_env: Any = None, autoescape: bool = False):
        from docx.opc.oxml import serialize_part_xml
        from docx.opc.part import XmlPart
        from docx.oxml.parser import parse_xml
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
        body_src = _jinja_source(tpl.patch_xml(tpl.get_xml()), env)
        self._body = env.from_string(body_src)
        # The text path (document_xml) is exact only for an escaped body whose values all land
        # between tags: no autoescape, |safe, RichText ({{r ...}}) or Jinja inside a tag; and
        # without drawings (docPr), which docxtpl renumbers in every letter.
        self._text_path = (env.autoescape is True and not _JINJA_IN_TAG.search(body_src)
                           and not _NOT_ESCAPED.search(body_src) and "docPr" not in body_src)
        self._body_tags: dict[bytes, bytes] = {}
        self._maybe_empty = _maybe_empty(body_src)
        self._rigid_tables = self._text_path and _rigid_tables(body_src)
        probe = serialize_part_xml(parse_xml(b"<probe/>"))
        self._declaration = probe[:probe.index(b"<probe/>")]  # what python-docx writes before a part
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
                    source = _jinja_source(patched, env)
                    self._parts.append(_Part(part.partname.membername, env.from_string(source), encoding,
                                             "header_footer", source, env.autoescape is True))
                else:
                    rendered = ref.render_xml_part(patched, part, {}, env)
                    ref.map_headers_footers_xml(rel_key, rendered.encode(encoding))
        for part in ref.docx.part.package.parts:
            if part.content_type != _FOOTNOTES or isinstance(part, XmlPart):
                continue  # docxtpl's footnote rendering only takes effect on plain (non-XML) parts
            blob = part.blob.decode("utf-8") if isinstance(part.blob, bytes) else part.blob
            patched = ref.patch_xml(blob)
            if _TAG.search(patched):
                source = _jinja_source(patched, env)
                self._parts.append(_Part(part.partname.membername, env.from_string(source), "utf-8", "raw",
                                         source, False))
            else:
                part._blob = ref.render_xml_part(patched, part, {}, env).encode("utf-8")
        core = ref.docx.core_properties
        initial = {p: getattr(core, p) for p in _CORE_PROPS}
        self._core: Optional[dict] = None
        if any(_TAG.search(v or "") for v in initial.values()):
            # a property without a tag renders the same for every letter: once
            self._core = {p: env.from_string(v) if _TAG.search(v or "") else env.from_string(v).render({})
                          for p, v in initial.items()}
            self._core_obj = tpl.docx.core_properties
            self._core_part = tpl.docx.part.package._core_properties_part  # noqa: SLF001
            self._core_name = self._core_part.partname.membername
            # The part as python-docx writes it with a marker for each value (U+E000 and the
            # value's index): per letter, the escaped values go between the pieces. The
            # elements exist from now on, so only their text changes between letters.
            for i, prop in enumerate(self._core):
                setattr(self._core_obj, prop, f"\ue000{i}\ue000")
            pieces = re.split(rb"\xee\x80\x80(\d+)\xee\x80\x80", self._core_part.blob)
            order = [int(i) for i in pieces[1::2]]  # the values in the order the elements come
            self._core_pieces = (pieces[::2], order) if sorted(order) == list(range(len(self._core))) else None
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
        # (the one-character searches first: memchr, where a longer one is a slow pass over ~40 KB)
        xml = _render(template, context)
        if "\n" in xml:
            xml = xml.replace("\n<w:p ", "<w:p ").replace("\n<w:p>", "<w:p>")
        if ("{" in xml or "}" in xml) and ("{_" in xml or "_}" in xml):
            xml = xml.replace("{_{", "{{").replace("}_}", "}}").replace("{_%", "{%").replace("%_}", "%}")
        # resolve_listing only rewrites tabs, newlines, \a and \f: without any it is the identity
        listing = "\n" in xml or "\t" in xml or "\a" in xml or "\f" in xml
        return self._tpl.resolve_listing(xml) if listing else xml

    def document_xml(self, context: Mapping[str, Any]) -> bytes:
        """word/document.xml for this context, as docxtpl + python-docx would write it."""
        xml = self._render_xml(self._body, context)
        body = _as_lxml_writes(xml, self._maybe_empty, body=True, rigid_tables=self._rigid_tables,
                               drawings=False) if self._text_path else None  # (no docPr: see __init__)
        if body is None:
            body = self._reserialised(xml)
        start = body.index(b">") + 1
        tag = body[:start]
        stripped = self._body_tags.get(tag)
        if stripped is None:
            from lxml import etree

            # docxtpl moves the body into the document element, whose namespace declarations
            # the body's start tag then no longer repeats
            stripped = tag
            end = b"</" + tag[1:-1].split()[0].rstrip(b"/") + b">"
            for prefix, uri in etree.fromstring(tag + end).nsmap.items():
                if self._root_ns.get(prefix) == uri:
                    name = b"xmlns" if prefix is None else b"xmlns:" + prefix.encode()
                    stripped = stripped.replace(b" " + name + b'="' + uri.encode() + b'"', b"", 1)
            self._body_tags[tag] = stripped
        return self._prefix + stripped + body[start:] + self._suffix

    def _reserialised(self, xml: str) -> bytes:
        """The body as docxtpl leaves it: parsed, tables fixed, drawings renumbered, serialised."""
        from lxml import etree

        tree = etree.fromstring(xml, parser=self._parser)  # the parser DocxTemplate.fix_tables uses
        if _tables_need_fixing(tree):
            tree = self._tpl.fix_tables(xml)
        if "docPr" in xml:
            for i, elt in enumerate(_DOCPR(tree), start=1001):
                elt.attrib["id"] = str(i)  # DocxTemplate.fix_docpr_ids, counting from 1000 each render
        return etree.tostring(tree, encoding="UTF-8")

    def parts(self, context: Mapping[str, Any]) -> dict[str, bytes]:
        """Every part that varies with the context: name -> bytes."""
        out = {self._document_name: self.document_xml(context)}
        for part in self._parts:
            xml = self._render_xml(part.template, context)
            if part.kind == "header_footer":
                # DocxTemplate.map_headers_footers_xml re-parses it into an XmlPart, with
                # python-docx's parser (which drops whitespace-only text: left to it)
                data = _as_lxml_writes(xml, part.maybe_empty) if part.text_path and xml.startswith("<w:") else None
                if data is None or _BLANK_TEXT.search(data):
                    from docx.oxml.parser import parse_xml

                    out[part.name] = self._serialize(parse_xml(xml.encode(part.encoding)))
                else:
                    out[part.name] = self._declaration + data
            else:
                out[part.name] = xml.encode(part.encoding)
        if self._core is not None:
            out[self._core_name] = self._core_xml(context)
        return out

    def _core_xml(self, context: Mapping[str, Any]) -> bytes:
        """docProps/core.xml: DocxTemplate.render_properties, then python-docx's blob."""
        values = [template if isinstance(template, str) else _render(template, context)
                  for template in self._core.values()]
        if self._core_pieces is not None:
            # python-docx refuses values over 255 characters, lxml text XML cannot hold
            escaped = [_escape_text(v) if len(v) <= 255 else None for v in values]
            if None not in escaped:
                static, order = self._core_pieces
                return b"".join(piece for text, i in zip(static, order) for piece in (text, escaped[i])) + static[-1]
        for prop, value in zip(self._core, values):
            setattr(self._core_obj, prop, value)
        return self._core_part.blob

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
