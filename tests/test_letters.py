"""Letters of medical necessity (issue 4): content in every format, kinds, safety, CLI behaviour.

Each generated letter is opened the way a reader would open it: the .docx with python-docx,
the PDF's text with pypdf, the HTML with html.parser. The facts a payer needs are looked for
in each. PDF is made by Typst (tests/test_pdf.py).
"""

from __future__ import annotations

import copy
import io
import json
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from priorauth.criteria.policy import load_criteria
from priorauth.engine.determination import determine
from priorauth.cli.main import cli
from priorauth.core.errors import InputError, PriorAuthError
from priorauth.model.referral import referral_from_data

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = Path(__file__).resolve().parent / "data" / "spec-examples"
DM = EXAMPLES / "dm-refractory.yaml"
PV = EXAMPLES / "pv-missing-biopsy.yaml"
BP = EXAMPLES / "bp-rapidly-progressive.yaml"

render = pytest.importorskip("priorauth.letters.render")


# ------------------------------------------------------------------ fixtures: referrals as data


def example(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def dm_data() -> dict:
    data = example(DM)
    # YAML dates come back as date objects from yaml.safe_load: the referral wants text.
    return json.loads(json.dumps(data, default=str))


def weird_data() -> dict:
    """Names with markup characters, quotes and non-ASCII letters; a template-looking value."""
    data = dm_data()
    data["referral_id"] = "R-WEIRD-1"
    data["patient"]["given_name"] = "Zoë Ñúñez"
    data["patient"]["family_name"] = "O'Brien & <Sons>"
    data["prescriber"]["organization"] = 'Smith & Wesson "Rheum" <Clinic>'
    data["treatments"][0]["details"] = "CK > 2,000 & MMT-8 < 120 | *still* _weak_ {{ 7*7 }} {% raw %}\x0c"
    return data


def continuation_data() -> dict:
    """Dermatomyositis on Privigen since 2026-05-04, interval lengthened, objective response."""
    data = dm_data()
    data["referral_id"] = "R-2026-0101"
    data["treatments"] += [
        {"drug": "Privigen", "route": "iv", "dose": "2 g/kg over 5 days every 4 weeks", "dose_g_per_kg": 2.0,
         "interval_weeks": 4, "start_date": "2026-05-04", "end_date": "2026-09-27", "outcome": "response"},
        {"drug": "Privigen", "route": "iv", "dose": "2 g/kg over 5 days every 6 weeks", "dose_g_per_kg": 2.0,
         "interval_weeks": 6, "start_date": "2026-09-28", "end_date": None, "outcome": "response"},
    ]
    data["assessments"] = [
        {"measure": "CK", "value": 4850, "unit": "U/L", "date": "2025-01-12"},
        {"measure": "CK", "value": 1900, "unit": "U/L", "date": "2026-04-28"},
        {"measure": "CK", "value": 640, "unit": "U/L", "date": "2026-08-03"},
        {"measure": "CK", "value": 310, "unit": "U/L", "date": "2026-11-02"},
        {"measure": "MMT-8", "value": 121, "unit": "of 150", "date": "2026-04-28"},
        {"measure": "MMT-8", "value": 142, "unit": "of 150", "date": "2026-11-02"},
        {"measure": "CDASI", "value": 28, "date": "2026-04-28"},
        {"measure": "CDASI", "value": 9, "date": "2026-11-02"},
        {"measure": "creatinine", "value": 0.8, "unit": "mg/dL", "date": "2026-11-01"},
    ]
    data["request"].update({"request_type": "continuation", "interval_weeks": 6})
    return data


def rituximab_data() -> dict:
    data = json.loads(json.dumps(example(PV), default=str))
    data["referral_id"] = "R-2026-0202"
    data["findings"].append({"kind": "skin_biopsy", "date": "2026-02-20", "result": "suprabasal acantholysis",
                             "supports_diagnosis": True})
    data["request"] = {"therapy": "rituximab", "product": "Rituxan", "request_type": "initial", "dose_mg": 1000,
                       "doses": 2, "start_date": "2026-12-01", "site_of_care": "infusion_center"}
    data["coverage"]["payer"] = "testpayer-without-variant"
    # issue 13: rituximab needs HBV screening and, in pemphigus, a documented severity
    data["assessments"] = [*data.get("assessments", []), {"measure": "pdai", "value": 30, "date": "2026-11-10"},
                           {"measure": "hbsag", "result": "negative", "date": "2026-11-10"},
                           {"measure": "anti_hbc", "result": "negative", "date": "2026-11-10"}]
    return data


DENIAL = {"reason": "No adequate trial of systemic corticosteroids is documented.", "date": "2026-11-15",
          "reference": "PA-2026-778812", "criteria": ["refractory_to_steroids", "diagnosis_confirmed"]}


@pytest.fixture(scope="module")
def criteria():
    return load_criteria()


def decide(data: dict, criteria):
    ref = referral_from_data(copy.deepcopy(data), "test")
    return ref, determine(ref, criteria)


def write_yaml(tmp_path: Path, data: dict, name: str = "referral.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


# ------------------------------------------------------------------ reading letters back


def docx_text(data: bytes) -> str:
    """Every paragraph of the .docx (body, tables, header, footer) as python-docx reads it."""
    from docx import Document
    from docx.oxml.ns import qn

    doc = Document(io.BytesIO(data))
    parts = [doc.element.body] + [s.header._element for s in doc.sections] + [s.footer._element for s in doc.sections]
    lines = []
    for part in parts:
        for p in part.iter(qn("w:p")):
            lines.append("".join(t.text or "" for t in p.iter(qn("w:t"))))
    return "\n".join(lines)


def docx_images(data: bytes) -> list[str]:
    return [n for n in zipfile.ZipFile(io.BytesIO(data)).namelist() if n.startswith("word/media/")]


def pdf_text(data: bytes) -> str:
    pypdf = pytest.importorskip("pypdf")
    reader = pypdf.PdfReader(io.BytesIO(data))
    text = " ".join(" ".join((page.extract_text() or "").split()) for page in reader.pages)
    return re.sub(r"(\w)- (\w)", r"\1-\2", text)  # "steroid-" at a line end, "sparing" on the next


class _Html(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: list[str] = []
        self.imgs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs).get("src", ""))

    def handle_data(self, data):
        self.text.append(data)


def html_parse(data: bytes) -> _Html:
    parser = _Html()
    parser.feed(data.decode("utf-8"))
    parser.close()
    return parser


def flat(text: str) -> str:
    return " ".join(text.split())


def required_facts(ref, det) -> list[str]:
    """What a medical director needs to find in the letter, from the referral and determination."""
    d = det.dosing
    facts = [f"{ref.patient.given_name} {ref.patient.family_name}", ref.patient.birth_date.strftime("%m/%d/%Y"),
             ref.coverage.member_id, ref.prescriber.npi, d["hcpcs"], ref.diagnoses[0].code]
    if "grams_per_cycle" in d:
        facts += [f"{d['grams_per_cycle']:g} g", f"{d['billing_units_per_cycle']} units"]
    else:
        facts += [f"{d['dose_mg']:,.0f} mg", f"{d['billing_units_per_dose']} units"]
    facts += [r.node.label for r, _ in det.result.walk() if r.node.pathway and r.status == "met"]
    facts += [t.drug for t in ref.treatments]
    from priorauth.letters import content

    lit = content.literature_table()
    # Sources of the met leaves the decision rests on (every ancestor met too: a met
    # "diagnosis is BP" inside a failed BP-only branch decides nothing).
    status = {}
    for r, parent in det.result.walk():
        status[r.node.id] = r.status == "met" and status.get(parent, True)
    cited = {r.node.source for r, _ in det.result.walk() if status[r.node.id] and not r.children}
    # A non-US guideline is never printed as the policy of a US payer (issue 14).
    facts += [content.iso_dates(det.policy.sources[k].citation) for k in cited
              if k in det.policy.sources and not content.non_us(det.policy.sources[k].citation, lit)]
    facts += [e["citation"] for e in content.literature(ref, ref.diagnoses[0].code, lit)]
    return facts


def assert_facts(text: str, facts: list[str], where: str) -> None:
    text = flat(text)
    missing = [f for f in facts if flat(f) not in text]
    assert not missing, f"{where} lacks {missing}"


# ------------------------------------------------------------------ the context


def test_context_is_plain_json(criteria):
    ref, det = decide(dm_data(), criteria)
    ctx = render.letter_context(ref, det)
    assert json.loads(json.dumps(ctx)) == ctx
    assert ctx["letter_date"] == "November 20, 2026"  # the referral's date, not today's
    assert ctx["request"]["hcpcs"] == "J1459" and ctx["request"]["grams_per_cycle"] == "136"
    assert ctx["request"]["billing_units_per_cycle"] == "272"
    assert {p["id"] for p in ctx["pathways"]} == set(det.pathways_met)
    assert [t["drug"] for t in ctx["treatments"]] == ["prednisone", "methotrexate", "mycophenolate mofetil"]
    assert any("ProDERM" in lit["citation"] for lit in ctx["literature"])
    # Enclosures come from what the chart holds: the biopsy report, labs, treatment notes.
    enc = " | ".join(ctx["enclosures"])
    assert "Muscle biopsy pathology report, 01/28/2025" in enc
    assert "Creatine kinase (CK)" in enc and "prednisone" in enc
    # Monitoring wording comes from templates/letter-text.yaml, with the latest creatinine.
    assert any("creatinine" in m and "0.8 mg/dL" in m for m in ctx["monitoring"])
    assert any("thrombo" in m.lower() for m in ctx["monitoring"])


@pytest.mark.parametrize("text", [
    "plain", "tab\tnew\nline\r", "nul\x00", "bell\x07", "back\x08space", "vt\x0b", "ff\x0c", "esc\x1b",
    "x\ufffe", "x\uffff", "lone \ud800 surrogate", "literal \\b and \\f and \\u0041", "Zoë & <O'Brien>"])
def test_clean_context_matches_the_full_walk(text):
    """The serialise-and-search shortcut removes exactly what the walk removes, anywhere in
    the context, and a clean context comes back as it is."""
    ctx = {"a": text, "b": [1, None, {"c": [text, 2.5]}], "d": {"e": True}}
    expected = render._clean(ctx)
    assert render._clean_context(ctx) == expected
    cleaned = [expected["a"], expected["b"][2]["c"][0]]
    assert not any(ch in t for t in cleaned for ch in "\x00\x07\x08\x0b\x0c\x1b\ufffe\uffff")
    assert all(t == text for t in cleaned) == (render._XML_INVALID.search(text) is None)


def test_wording_snippets_keep_template_render_semantics():
    """_say renders a snippet over the letter context without copying it; the lookups stay
    Template.render's: extra names, then the context, then Jinja's globals; StrictUndefined;
    a snippet's own {% set %} stays in that snippet; the context is left as it was."""
    ctx = {"patient": {"name": "Ann"}, "n": 2}
    before = copy.deepcopy(ctx)
    assert render._say("{{ patient.name }} {{ n }}", ctx) == "Ann 2"
    assert render._say("{{ n }}", ctx, n=3) == "3"  # extra first
    assert render._say("{{ range(n) | list | length }}", ctx) == "2"  # globals last
    assert render._say("{{ patient.items is defined }}", ctx) == "True"  # dict attributes stay attributes
    assert render._say("{% set n = 9 %}{{ n }}", ctx) == "9" and render._say("{{ n }}", ctx) == "2"
    assert render._say("  a \n\t b  ", ctx) == "  a \n\t b  "  # no tag: as written
    assert render._say("{{ patient.name }}  \n x", ctx) == "Ann x"  # rendered: whitespace collapsed
    with pytest.raises(PriorAuthError, match="cannot render the wording.*'patient_name' is undefined"):
        render._say("{{ patient_name }}", ctx)
    with pytest.raises(PriorAuthError, match="has no attribute 'nmae'"):
        render._say("{{ patient.nmae }}", ctx)
    assert ctx == before


def test_sandbox_dict_shortcut_behaves_like_the_sandbox():
    from jinja2.sandbox import SandboxedEnvironment

    plain = SandboxedEnvironment(undefined=render.jinja_env().undefined)
    ours = render.jinja_env("text")
    data = {"d": {"name": "x", "keys": "k", "items": [1]}, "o": object()}
    for src in ("{{ d.name }}", "{{ d.keys is callable }}", "{{ d['keys'] }}", "{{ d.items is callable }}",
                "{{ d.__class__ is defined }}", "{{ d.missing is defined }}", "{{ o.__class__ is defined }}"):
        assert ours.from_string(src).render(data) == plain.from_string(src).render(data), src


def test_context_shows_only_criteria_the_record_meets(criteria):
    ref, det = decide(example_data(PV), criteria)
    ctx = render.letter_context(ref, det, draft=True)
    ids = [c["id"] for c in ctx["criteria"]]
    assert "diagnosis_confirmed" not in ids  # unknown: listed as missing instead
    assert "flare_on_taper" in ids
    # a met leaf inside an unmet alternative (the rapidly-progressive bridge) is not a criterion met
    assert not any(c["pathway"] and "apidly" in c["pathway"] for c in ctx["criteria"])
    assert ctx["missing"] and "biopsy" in ctx["missing"][0]
    assert "meets each coverage criterion" not in ctx["text"]["opening"]


def example_data(path: Path) -> dict:
    return json.loads(json.dumps(example(path), default=str))


def test_wording_lives_in_the_data_file(criteria, tmp_path):
    """One change of wording is one change to templates/letter-text.yaml, in every format; a
    templates folder (--templates / PRIORAUTH_TEMPLATES) is read once, when Letters is made."""
    alt = tmp_path / "templates"
    shutil.copytree(render.TEMPLATES, alt)
    text = (alt / "letter-text.yaml").read_text(encoding="utf-8")
    changed = text.replace("IgA level before the first course", "Serum IgA measured before the first course")
    assert changed != text
    (alt / "letter-text.yaml").write_text(changed, encoding="utf-8")
    letters = render.Letters(alt)
    (alt / "letter-text.yaml").write_text("broken: [", encoding="utf-8")  # read no file after construction
    (alt / "letter.md.j2").write_text("{{ nope }}", encoding="utf-8")
    ref, det = decide(dm_data(), criteria)
    for fmt in ("html", "md"):
        out = letters.render(ref, det, fmt).decode()
        assert "Serum IgA measured before the first course" in out
    assert "Serum IgA measured" in docx_text(letters.render(ref, det, "docx"))
    assert "Serum IgA measured" in pdf_text(letters.render(ref, det, "pdf"))
    assert "Serum IgA measured" not in render.render_letter(ref, det, "md").decode()  # the bundled one


def test_cli_templates_option_and_variable(tmp_path, monkeypatch):
    alt = tmp_path / "templates"
    shutil.copytree(render.TEMPLATES, alt)
    text = (alt / "letter-text.yaml").read_text(encoding="utf-8")
    (alt / "letter-text.yaml").write_text(text.replace("To the medical reviewer:", "Dear Reviewer:"), encoding="utf-8")
    out = tmp_path / "a.md"
    assert run(DM, "-o", out, "--templates", alt).exit_code == 0
    assert "Dear Reviewer:" in out.read_text(encoding="utf-8")
    monkeypatch.setenv("PRIORAUTH_TEMPLATES", str(alt))
    out2 = tmp_path / "b.md"
    assert run(DM, "-o", out2).exit_code == 0
    assert "Dear Reviewer:" in out2.read_text(encoding="utf-8")
    result = run(DM, "-o", tmp_path / "c.md", "--templates", tmp_path / "nowhere")
    assert result.exit_code == 2 and "nowhere" in result.output


def test_same_input_same_docx_bytes(criteria):
    ref, det = decide(dm_data(), criteria)
    a = render.render_letter(ref, det, "docx")
    b = render.render_letter(ref, det, "docx")
    assert a == b
    dates = {i.date_time[:3] for i in zipfile.ZipFile(io.BytesIO(a)).infolist()}
    assert dates == {(2026, 11, 20)}  # stamped with the letter's date, never the clock


# ------------------------------------------------------------------ facts in every format


@pytest.mark.parametrize("maker", [dm_data, lambda: example_data(BP), rituximab_data], ids=["dm", "bp", "rituximab"])
def test_docx_html_md_hold_every_fact(criteria, maker):
    ref, det = decide(maker(), criteria)
    assert det.determination == "meets_criteria", det.missing
    facts = required_facts(ref, det)
    assert_facts(docx_text(render.render_letter(ref, det, "docx")), facts, "docx")
    page = html_parse(render.render_letter(ref, det, "html"))
    assert_facts("".join(page.text), facts, "html")
    md = render.render_letter(ref, det, "md").decode()
    # Markdown escapes punctuation (O'Brien stays, & becomes \&): compare without the escapes.
    assert_facts(md.replace("\\", ""), facts, "md")


def test_ivig_letter_gives_the_dosing_arithmetic(criteria):
    ref, det = decide(example_data(BP), criteria)
    text = flat(docx_text(render.render_letter(ref, det, "docx")))
    assert "adjusted body weight" in text and "68.2 kg" in text
    assert "136.5 g" in text and "273 units prescribed" in text and "of 0.5 g" in text and "J1568" in text
    assert "every 4 weeks" in text and "Hospital outpatient department" in text
    assert "Ahmed AR" in text  # blistering literature


def test_rituximab_letter_shows_mg_doses_and_units_per_dose(criteria):
    ref, det = decide(rituximab_data(), criteria)
    text = flat(docx_text(render.render_letter(ref, det, "docx")))
    assert "1,000 mg per infusion" in text and "Number of doses 2" in text.replace("\n", " ")
    assert "100 units of 10 mg" in text and "J9312" in text
    assert "g/kg per cycle" not in text and "Dosing weight" not in text
    assert "Hepatitis B" in text  # rituximab monitoring, not IVIG's
    assert "IgA" not in text


def test_pdf_holds_every_fact(criteria):
    ref, det = decide(dm_data(), criteria)
    pdf = render.render_letter(ref, det, "pdf")
    assert pdf.startswith(b"%PDF")
    assert_facts(pdf_text(pdf), required_facts(ref, det), "pdf")


# ------------------------------------------------------------------ escaping and odd characters


def test_markup_characters_are_escaped_in_every_format(criteria):
    ref, det = decide(weird_data(), criteria)
    name = "Zoë Ñúñez O'Brien & <Sons>"

    text = docx_text(render.render_letter(ref, det, "docx"))  # python-docx opens it: valid XML
    assert name in text and 'Smith & Wesson "Rheum" <Clinic>' in text
    assert "{{ 7*7 }}" in text and "49" not in text.split("{{ 7*7 }}")[0][-5:]  # values are never re-rendered

    raw = render.render_letter(ref, det, "html").decode()
    page = html_parse(raw.encode())
    assert name in "".join(page.text)
    assert "sons" not in page.tags and "clinic" not in page.tags
    assert "O&#39;Brien &amp; &lt;Sons&gt;" in raw

    md = render.render_letter(ref, det, "md").decode()
    assert "O'Brien \\& \\<Sons\\>" in md
    assert "<Sons>" not in md and "\\*still\\* \\_weak\\_" in md
    assert "\\|" in md  # a | in a value cannot break the table


def test_md_escape_rules():
    esc = render.md_escape
    assert esc("a|b") == "a\\|b" and esc("<b>") == "\\<b\\>" and esc("x & y") == "x \\& y"
    assert esc("- item") == "\\- item" and esc("# h") == "\\# h" and esc("1. x") == "1\\. x"
    assert esc("23.4") == "23.4"  # a decimal is not a list item
    assert esc("two\nlines") == "two lines" and esc(None) == ""


def test_odd_names_convert_to_pdf(criteria):
    ref, det = decide(weird_data(), criteria)
    text = pdf_text(render.render_letter(ref, det, "pdf"))
    assert "Zoë Ñúñez O'Brien & <Sons>" in text or "Zoë Ñúñez O’Brien & <Sons>" in text


# ------------------------------------------------------------------ continuation and appeal


def test_continuation_letter_tables_and_charts_the_response(criteria):
    ref, det = decide(continuation_data(), criteria)
    assert det.determination == "meets_criteria", det.missing
    ctx = render.letter_context(ref, det, kind="continuation")
    rows = {m["key"]: m for m in ctx["continuation"]["measures"]}
    # baseline: latest value on or before the first Privigen course (2026-05-04); latest: newest
    assert rows["ck"]["baseline"] == "1,900" and rows["ck"]["baseline_date"] == "04/28/2026"
    assert rows["ck"]["latest"] == "310" and rows["ck"]["change_percent"] == "-84%"
    assert rows["ck"]["verdict"] == "improved" and rows["mmt8"]["verdict"] == "improved"
    assert rows["mmt8"]["change"] == "+21"
    assert rows["creatinine"]["baseline"] is None  # no value before treatment: not invented
    assert ctx["continuation"]["first_course"] == "05/04/2026"

    docx = render.render_letter(ref, det, "docx", kind="continuation")
    text = flat(docx_text(docx))
    assert "Objective response to treatment" in text and "1,900 on 04/28/2026" in text
    assert docx_images(docx), "the trend chart is an image in the .docx"
    page = html_parse(render.render_letter(ref, det, "html", kind="continuation"))
    assert any(src.startswith("data:image/png;base64,") for src in page.imgs)
    md = render.render_letter(ref, det, "md", kind="continuation").decode()
    assert "trend chart is in the DOCX, PDF and HTML" in md


def test_initial_letter_has_no_chart(criteria):
    ref, det = decide(dm_data(), criteria)
    assert render.chart_png(render.letter_context(ref, det)) is None
    assert not docx_images(render.render_letter(ref, det, "docx"))


def test_appeal_answers_each_point_with_policy_wording(criteria):
    data = dm_data()
    ref, det = decide(data, criteria)
    ctx = render.letter_context(ref, det, kind="appeal", denial=DENIAL)
    points = ctx["appeal"]["points"]
    assert [p["id"] for p in points] == ["refractory_to_steroids", "diagnosis_confirmed"]
    for p in points:
        node = next(r.node for r, _ in det.result.walk() if r.node.id == p["id"])
        assert p["label"] == node.label
        # the payer's own document and section when the policy names one, else the source
        own = {c["id"]: c.get("citation") for c in det.to_dict()["criteria"]}
        from priorauth.letters.content import iso_dates  # letters write dates as a US reader does
        assert p["citation"] == iso_dates(own.get(node.id) or det.policy.sources[node.source].citation)
        assert p["support"] and p["answer"]
    text = flat(docx_text(render.render_letter(ref, det, "docx", kind="appeal", denial=DENIAL)))
    assert "PA-2026-778812" in text and "11/15/2026" in text
    assert "No adequate trial of systemic corticosteroids is documented" in text
    assert text.index("Response to the denial") < text.index("Coverage criteria met")


def test_appeal_answers_an_unmet_alternative_with_the_met_one(criteria):
    ref, det = decide(dm_data(), criteria)
    unmet = next(r.node.id for r, _ in det.result.walk() if r.node.pathway and r.status != "met")
    ctx = render.letter_context(ref, det, kind="appeal", denial={"reason": "x", "criteria": [unmet]})
    point = ctx["appeal"]["points"][0]
    assert "alternative" in point["answer"]
    assert {s["id"] for s in point["support"]} >= set(det.pathways_met)


def test_appeal_rejects_unknown_criterion_and_bad_denials(criteria):
    ref, det = decide(dm_data(), criteria)
    with pytest.raises(InputError, match=r"criteria\[0\]: 'no_such_rule'"):
        render.letter_context(ref, det, kind="appeal", denial={"reason": "x", "criteria": ["no_such_rule"]})
    with pytest.raises(InputError, match="reason"):
        render.letter_context(ref, det, kind="appeal", denial={"date": "2026-11-01"})
    with pytest.raises(InputError, match="after the referral date"):
        render.letter_context(ref, det, kind="appeal", denial={"reason": "x", "date": "2026-12-30"})
    with pytest.raises(InputError, match="needs the denial"):
        render.letter_context(ref, det, kind="appeal")
    with pytest.raises(InputError, match="date: expected a date"):
        render.parse_denial({"reason": "x", "date": "15/11/2026"})
    with pytest.raises(InputError, match="refrence: unknown field"):
        render.parse_denial({"reason": "x", "refrence": "A1"})


# ------------------------------------------------------------------ templates: strict and sandboxed


def test_builtin_templates_exist_and_docx_template_is_reproducible(tmp_path):
    for name in ("letter.docx", "letter.html.j2", "letter.md.j2", "letter-text.yaml", "build_docx_templates.py"):
        assert (render.TEMPLATES / name).is_file(), name
    out = tmp_path / "letter.docx"
    subprocess.run([sys.executable, str(render.TEMPLATES / "build_docx_templates.py"), str(out)], check=True,
                   capture_output=True)
    # Compare what the script authors (every text run and tag of body, header and footer), not
    # the bytes: another python-docx version may ship other default styles.
    assert docx_text(out.read_bytes()) == docx_text((render.TEMPLATES / "letter.docx").read_bytes()), \
        "templates/letter.docx is stale: run templates/build_docx_templates.py"
    assert "{%tr for row in request.rows %}" in docx_text(out.read_bytes())


def test_misspelled_variable_fails_instead_of_printing_blank(criteria, tmp_path):
    ref, det = decide(dm_data(), criteria)
    tpl = tmp_path / "mine.html"
    tpl.write_text("<p>{{ patient.nmae }}</p>", encoding="utf-8")
    with pytest.raises(InputError, match="nmae") as err:
        render.render_letter(ref, det, "html", template=tpl)
    assert str(tpl) in str(err.value)
    ok = tmp_path / "ok.md"
    ok.write_text("Patient: {{ patient.name }} | {{ request.hcpcs }}", encoding="utf-8")
    assert render.render_letter(ref, det, "md", template=ok).decode() == "Patient: Maria Lopez | J1459"


def test_sandbox_blocks_python_internals(criteria, tmp_path):
    ref, det = decide(dm_data(), criteria)
    tpl = tmp_path / "evil.html"
    tpl.write_text("{{ ''.__class__.__mro__ }}", encoding="utf-8")
    with pytest.raises(InputError, match="unsafe"):
        render.render_letter(ref, det, "html", template=tpl)
    tpl.write_text("{{ patient.name.__class__.__base__.__subclasses__() }}", encoding="utf-8")
    with pytest.raises(InputError, match="unsafe"):
        render.render_letter(ref, det, "html", template=tpl)


def _docx_template(path: Path, text: str) -> Path:
    from docx import Document

    doc = Document()
    doc.add_paragraph(text)
    doc.save(str(path))
    return path


def test_custom_docx_template_is_sandboxed_and_escaped(criteria, tmp_path):
    ref, det = decide(weird_data(), criteria)
    good = _docx_template(tmp_path / "mine.docx", "Dear payer, {{ patient.name }} needs {{ request.product }}.")
    text = docx_text(render.render_letter(ref, det, "docx", template=good))
    assert "Dear payer, Zoë Ñúñez O'Brien & <Sons> needs Privigen." in text
    evil = _docx_template(tmp_path / "evil.docx", "{{ ''.__class__.__mro__ }}")
    with pytest.raises(InputError, match="unsafe"):
        render.render_letter(ref, det, "docx", template=evil)
    typo = _docx_template(tmp_path / "typo.docx", "{{ patient.nmae }}")
    with pytest.raises(InputError, match="nmae"):
        render.render_letter(ref, det, "docx", template=typo)
    with pytest.raises(InputError, match="needs a .docx template"):
        render.render_letter(ref, det, "docx", template=tmp_path / "x.html")


def test_template_errors_do_not_leak_patient_data(criteria, tmp_path):
    ref, det = decide(weird_data(), criteria)
    tpl = tmp_path / "bad.html"
    tpl.write_text("{{ patient.name + 5 }}", encoding="utf-8")
    with pytest.raises(InputError) as err:
        render.render_letter(ref, det, "html", template=tpl)
    assert "Zoë" not in str(err.value) and "Brien" not in str(err.value)


# ------------------------------------------------------------------ the command


def run(*args):
    return CliRunner().invoke(cli, ["letter", *map(str, args)])


def test_cli_writes_each_format_with_mode_0600(tmp_path):
    for ext in ("docx", "html", "md"):
        out = tmp_path / "letters" / f"R-2026-0001.{ext}"
        result = run(DM, "-o", out)
        assert result.exit_code == 0, result.output
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        assert "R-2026-0001" in result.output
    assert not list((tmp_path / "letters").glob(".*tmp"))  # no temp files left behind


def test_cli_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "letter.html"
    out.write_text("keep me")
    result = run(DM, "-o", out)
    assert result.exit_code == 2 and "already exists" in result.output and "--force" in result.output
    assert out.read_text() == "keep me"
    result = run(DM, "-o", out, "--force")
    assert result.exit_code == 0, result.output
    assert "Maria Lopez" in out.read_text()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_cli_refuses_when_criteria_not_met_and_writes_no_file(tmp_path):
    out = tmp_path / "pv.docx"
    result = run(PV, "-o", out)
    assert result.exit_code == 2
    assert "missing documentation" in result.output and "biopsy" in result.output and "--draft" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_cli_draft_is_marked_and_lists_what_is_missing(tmp_path):
    out = tmp_path / "pv.docx"
    result = run(PV, "-o", out, "--draft")
    assert result.exit_code == 0, result.output
    text = docx_text(out.read_bytes())
    lines = [line for line in text.splitlines() if line.strip()]
    assert "DRAFT - NOT FOR SUBMISSION" in lines[0]  # the page header, on every page
    body = flat(text)
    assert body.index("DRAFT - NOT FOR SUBMISSION") < body.index("Dear Medical Director")
    assert body.index("To document: biopsy confirmation") < body.index("Dear Medical Director")
    html = tmp_path / "pv.html"
    assert run(PV, "-o", html, "--draft").exit_code == 0
    assert "draft-letter" in html.read_text() and "To document: biopsy" in html.read_text()


def test_cli_ready_letter_has_no_draft_marking(tmp_path):
    out = tmp_path / "dm.docx"
    assert run(DM, "-o", out).exit_code == 0
    assert "DRAFT" not in docx_text(out.read_bytes())


def test_cli_format_from_extension_and_mismatches(tmp_path):
    assert run(DM, "-o", tmp_path / "a.txt").exit_code == 2
    result = run(DM, "-o", tmp_path / "a.txt", "--format", "md")
    assert result.exit_code == 0 and (tmp_path / "a.txt").read_text().startswith("**Lakeside")
    result = run(DM, "-o", tmp_path / "a.pdf", "--format", "docx")
    assert result.exit_code == 2 and "extension" in result.output
    result = run(DM, "-o", tmp_path / "b.htm")
    assert result.exit_code == 0 and "<!DOCTYPE html>" in (tmp_path / "b.htm").read_text()


def test_cli_appeal_from_options_and_from_file(tmp_path):
    out = tmp_path / "appeal.md"
    result = run(DM, "-o", out, "--denial-reason", "step therapy not shown", "--denial-date", "2026-11-15",
                 "--denial-reference", "PA-1")
    assert result.exit_code == 0, result.output
    assert "appeal letter" in result.output
    text = out.read_text()
    assert "step therapy not shown" in text and "PA-1" in text.replace("\\", "")
    denial = tmp_path / "denial.yaml"
    denial.write_text(yaml.safe_dump(DENIAL))
    out2 = tmp_path / "appeal.html"
    result = run(DM, "-o", out2, "--kind", "appeal", "--denial", denial)
    assert result.exit_code == 0, result.output
    assert "PA-2026-778812" in out2.read_text()


def test_cli_bad_appeal_input_is_a_usage_error(tmp_path):
    out = tmp_path / "a.md"
    result = run(DM, "-o", out, "--kind", "appeal")
    assert result.exit_code == 2 and "needs the denial" in result.output
    bad = tmp_path / "denial.yaml"
    bad.write_text("reason: x\nrefrence: A1\n")
    result = run(DM, "-o", out, "--denial", bad)
    assert result.exit_code == 2 and str(bad) in result.output and "refrence" in result.output
    bad.write_text("reason: x\ncriteria: [nope]\n")
    result = run(DM, "-o", out, "--denial", bad)
    assert result.exit_code == 2 and "nope" in result.output and "Traceback" not in result.output
    result = run(DM, "-o", out, "--kind", "initial", "--denial-reason", "x")
    assert result.exit_code == 2
    assert not out.exists()


def test_cli_kind_must_match_the_request(tmp_path):
    result = run(DM, "-o", tmp_path / "c.md", "--kind", "continuation")
    assert result.exit_code == 2 and "request_type is initial" in result.output
    path = write_yaml(tmp_path, continuation_data())
    result = run(path, "-o", tmp_path / "c.md")  # the kind follows request_type
    assert result.exit_code == 0, result.output
    assert "continuation letter" in result.output
    assert "Objective response to treatment" in (tmp_path / "c.md").read_text()


def test_cli_custom_template_errors_exit_2(tmp_path):
    tpl = tmp_path / "t.html"
    tpl.write_text("{{ ''.__class__.__mro__ }}")
    out = tmp_path / "x.html"
    result = run(DM, "-o", out, "--template", tpl)
    assert result.exit_code == 2 and "unsafe" in result.output and str(tpl) in result.output
    assert not out.exists()


def test_cli_bad_referral_names_file_and_field(tmp_path):
    data = dm_data()
    data["patient"]["birth_dat"] = "1971-03-14"
    path = write_yaml(tmp_path, data)
    result = run(path, "-o", tmp_path / "x.docx")
    assert result.exit_code == 2 and str(path) in result.output and "birth_dat" in result.output
    assert "Traceback" not in result.output


def test_cli_help_ends_with_example():
    from priorauth.cli.letter import letter

    result = CliRunner().invoke(cli, ["letter", "--help"])
    assert result.exit_code == 0
    assert result.output.index("Example:") < result.output.index("Options:")
    doc = letter.help.rstrip().splitlines()
    example = next(i for i, line in enumerate(doc) if line.strip() == "Example:")
    assert all(line.strip().startswith(("priorauth letter", "--")) for line in doc[example + 1:])


def test_cli_choices_match_the_library():
    from priorauth.cli import letter as commands_letter

    assert commands_letter.FORMAT_CHOICES == render.FORMATS
    assert commands_letter.KIND_CHOICES == render.KINDS + ("p2p",)
    from priorauth.letters import formats

    assert tuple(formats.get(f).name for f in render.FORMATS) == render.FORMATS  # one registration each


def test_check_does_not_import_the_renderers():
    code = ("import sys; from click.testing import CliRunner; import priorauth.cli.main as c; "
            f"r = CliRunner().invoke(c.cli, ['check', {str(DM)!r}, '--json']); "
            "assert r.exit_code == 0, r.output; "
            "print(','.join(m for m in ('docxtpl', 'docx', 'lxml', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "", f"priorauth check imported {out.stdout.strip()}"


# ------------------------------------------------------------------ PDF conversion


def test_cli_pdf_letter(tmp_path):
    out = tmp_path / "dm.pdf"
    result = run(DM, "-o", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"%PDF")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_continuation_pdf_shows_the_trend_values(criteria):
    ref, det = decide(continuation_data(), criteria)
    text = pdf_text(render.render_letter(ref, det, "pdf", kind="continuation"))
    assert "Objective response to treatment" in text
    assert "1,900 on 04/28/2026" in text and "4,850" in text  # CK has 4 points: its values over time


def test_a_draft_without_weight_still_names_the_products_hcpcs_code(criteria):
    # Review defect: the draft said "not known" for Gammagard Liquid when no dose could be computed.
    data = yaml.safe_load((ROOT / "samples" / "dm-steroid-intolerance.yaml").read_text())
    data["patient"].pop("weight_kg")
    data["request"]["product"] = "Gammagard Liquid"
    det = determine(referral_from_data(data, "t"), criteria)
    assert det.dosing is None and det.product["hcpcs"] == "J1569"
    ctx = render.letter_context(det.referral, det, kind="initial", draft=True)
    assert ctx["request"]["hcpcs"] == "J1569" and ctx["request"]["billing_unit"] == "0.5 g"
    assert "J1569" in render.render_letter(det.referral, det, "md", draft=True).decode()


def test_letters_read_courses_and_age_from_the_determination(criteria):
    det = determine(referral_from_data(yaml.safe_load((ROOT / "samples" / "dm-continuation-improved.yaml").read_text()),
                                       "t"), criteria)
    ctx = render.letter_context(det.referral, det, kind="continuation")
    assert ctx["patient"]["age"] == det.course["patient_age"]
    assert len(ctx["continuation"]["courses"]) == len(det.course["treatments"]) > 0
    # what the letter shows follows the determination, not a second reading of the chart
    det.course = {**det.course, "treatments": det.course["treatments"][:1]}
    assert len(render.letter_context(det.referral, det, kind="continuation")["continuation"]["courses"]) == 1


def test_a_denial_file_does_not_echo_a_key_that_may_be_data(tmp_path, runner):
    denial = tmp_path / "denial.yaml"
    denial.write_text("reason: no steroid trial\nEleanor Whitfield: 1\n")
    got = runner.invoke(cli, ["letter", str(ROOT / "samples" / "dm-steroid-intolerance.yaml"), "-o",
                              str(tmp_path / "a.md"), "--denial", str(denial)])
    assert got.exit_code == 2 and "Eleanor Whitfield" not in got.output and "unknown field" in got.output


@pytest.mark.parametrize("command", ["letter", "packet", "check", "explain", "lint", "policies", "schema"])
def test_cli_help_examples_run(tmp_path, monkeypatch, command):
    """Every example a --help gives runs as written, from a folder holding the samples."""
    import shlex

    result = CliRunner().invoke(cli, [command, "--help"])
    text = result.output.split("Example:")[1].split("Options:")[0]
    examples = [shlex.split(line) for line in text.replace("\\\n", " ").splitlines() if line.strip()]
    assert examples and all(args[0] == "priorauth" for args in examples)
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    (tmp_path / "my-criteria").symlink_to(ROOT / "criteria")  # lint's example: a user's criteria folder
    monkeypatch.chdir(tmp_path)
    for args in examples:
        for shell in ("|", ">"):  # `... --json | jq .missing`, `... > x.json`: the command itself
            args = args[:args.index(shell)] if shell in args else args
        for flag, a in zip(["", *args], args):
            if a.endswith((".docx", ".pdf", ".html", ".md")) and "/" in a and not a.startswith("samples/"):
                (tmp_path / a).parent.mkdir(parents=True, exist_ok=True)
            if flag == "--attach":  # the example's records: a one-page PDF each
                import typst

                (tmp_path / a).write_bytes(typst.compile(b"= Record"))
        r = CliRunner().invoke(cli, args[1:])
        assert r.exit_code in (0, 1) if command == "check" else r.exit_code == 0, (args, r.output)
