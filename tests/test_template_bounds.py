"""A user's own template is bounded (issue 16): a loop for ever, a huge range, string or
list, a macro that calls itself, a giant output, in an HTML/Markdown, DOCX or Typst
template, or in a --templates folder, ends with exit 2 and a message naming the template
file; in a batch that record is `error` with the reason and the run goes on.

Each case must finish well inside a generous bound (the error path, not a speed test)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from priorauth.cli.main import cli
from priorauth.letters import render, sandbox

ROOT = Path(__file__).resolve().parents[1]
DM = ROOT / "tests" / "data" / "spec-examples" / "dm-refractory.yaml"
SAMPLES = ROOT / "samples"
BOUND = 20.0  # seconds: generous, the limits stop each case in ~5 s or less

JINJA = {
    "loop": "{% for i in range(1000000) %}{% for j in range(1000000) %}{% endfor %}{% endfor %}",
    # no operation to count, only iterations: the watchdog's wall clock stops it
    "spin": "{% set s = 'x' * 1000000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "range": "{% for i in range(10**12) %}{{ i }}{% endfor %}",
    "string": "{{ 'x' * 10**9 }}",
    "list": "{{ ([0] * 10**9)|length }}",
    "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "output": "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
    "doubling": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "width": "{{ 'x'|center(10**9) }}{{ '{:>999999999}'.format(1) }}",
    "buffered": "{% macro m() %}{% for i in range(100000) %}{% for j in range(100000) %}{{ 'x' * 100000 }}"
                "{% endfor %}{% endfor %}{% endmacro %}{{ m()|length }}",
}


def run(*args):
    return CliRunner().invoke(cli, ["letter", *map(str, args)])


def _assert_refused(result, template: Path, started: float) -> None:
    assert time.monotonic() - started < BOUND
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # our error path, not an escaped exception
    assert "Traceback" not in result.output
    assert str(template) in result.output


@pytest.mark.parametrize("case", sorted(JINJA))
def test_a_custom_text_template_over_a_bound_exits_2_naming_it(tmp_path, case):
    tpl = tmp_path / f"{case}.html.j2"
    tpl.write_text("<p>{{ patient.name }}</p>" + JINJA[case], encoding="utf-8")
    out = tmp_path / "letter.html"
    started = time.monotonic()
    result = run(DM, "-o", out, "--template", tpl)
    _assert_refused(result, tpl, started)
    assert not out.exists()


def test_a_bounded_template_still_renders_what_a_letter_needs(tmp_path):
    tpl = tmp_path / "ok.md.j2"
    tpl.write_text("{{ patient.name }} {{ 'ab' * 3 }} {{ range(3)|join(',') }} {{ 2 ** 10 }}"
                   "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ n }}{% endif %}{% endmacro %} {{ f(5) }}"
                   " {{ '%5s'|format('x') }} {{ 'a-b'|replace('-', '+') }}", encoding="utf-8")
    out = tmp_path / "ok.md"
    result = run(DM, "-o", out, "--template", tpl)
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert "ababab" in text and "0,1,2" in text and "1024" in text and "12345" in text and "a+b" in text


def _docx_template(path: Path, text: str) -> Path:
    from docx import Document

    doc = Document()
    doc.add_paragraph(text)
    doc.save(str(path))
    return path


@pytest.mark.parametrize("case", ["loop", "string", "recursion", "output"])
def test_a_custom_docx_template_over_a_bound_exits_2_naming_it(tmp_path, case):
    tpl = _docx_template(tmp_path / f"{case}.docx", JINJA[case])
    out = tmp_path / "letter.docx"
    started = time.monotonic()
    result = run(DM, "-o", out, "--template", tpl)
    _assert_refused(result, tpl, started)
    assert not out.exists()


TYPST = {
    "loop": "#for i in range(1000000000) { }\n",
    "string": '#let s = "x" * 3000000000\n#s.len()\n',  # past the 2 GiB limit whatever else the process maps
    "recursion": "#let f(n) = f(n + 1)\n#f(0)\n",
}


@pytest.mark.parametrize("case", sorted(TYPST))
def test_a_custom_typst_template_over_a_bound_exits_2_naming_it(tmp_path, case):
    tpl = tmp_path / f"{case}.typ"
    tpl.write_text(TYPST[case], encoding="utf-8")
    out = tmp_path / "letter.pdf"
    started = time.monotonic()
    result = run(DM, "-o", out, "--template", tpl)
    assert time.monotonic() - started < sandbox.TYPST_SECONDS + BOUND
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert str(tpl) in result.output
    assert not out.exists()


def test_a_custom_typst_template_that_works_makes_the_pdf(tmp_path):
    tpl = tmp_path / "ok.typ"
    tpl.write_text('#let ctx = json(bytes(sys.inputs.ctx))\nLetter for #ctx.patient.name\n', encoding="utf-8")
    out = tmp_path / "ok.pdf"
    result = run(DM, "-o", out, "--template", tpl)
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"%PDF")


def _templates(tmp_path: Path, name: str, text: str) -> Path:
    alt = tmp_path / "templates"
    shutil.copytree(render.TEMPLATES, alt)
    (alt / name).write_text(text, encoding="utf-8")
    return alt


@pytest.mark.parametrize("case", ["loop", "string", "recursion"])
def test_a_templates_folder_is_bounded_too(tmp_path, case):
    alt = _templates(tmp_path, "letter.md.j2", JINJA[case])
    out = tmp_path / "letter.md"
    started = time.monotonic()
    result = run(DM, "-o", out, "--templates", alt)
    _assert_refused(result, alt / "letter.md.j2", started)


def test_a_templates_folder_typst_is_compiled_in_a_bounded_process(tmp_path):
    alt = _templates(tmp_path, "letter.typ", TYPST["loop"])
    out = tmp_path / "letter.pdf"
    result = run(DM, "-o", out, "--templates", alt)
    assert result.exit_code == 2 and str(alt / "letter.typ") in result.output, result.output
    assert "Traceback" not in result.output


def test_the_bundled_templates_are_not_bounded_copies():
    """The bundled templates keep the plain sandbox (no watchdog thread per letter)."""
    letters = render.default_letters()
    assert not letters.user
    assert not hasattr(letters.text_env("md"), "bounded_render")
    assert sandbox.is_bundled(render.TEMPLATES / "letter.typ")


def test_a_batch_goes_on_past_a_template_that_loops_for_one_record(tmp_path, monkeypatch):
    from priorauth.batch.run import run_batch

    src = tmp_path / "in"
    src.mkdir()
    names = ("dm-steroid-intolerance.yaml", "pm-first-line-failure.yaml")
    for name in names:
        (src / name).write_bytes((SAMPLES / name).read_bytes())
    import yaml

    looping = yaml.safe_load((src / names[0]).read_text(encoding="utf-8"))["referral_id"]
    alt = _templates(tmp_path, "letter.md.j2",
                     "{{ referral_id }}\n{% if referral_id == '" + looping + "' %}"
                     "{% for i in range(1000000) %}{% for j in range(1000000) %}{% endfor %}{% endfor %}"
                     "{% endif %}")
    monkeypatch.setenv("PRIORAUTH_TEMPLATES", str(alt))
    render._letters.cache_clear()
    out = tmp_path / "out"
    started = time.monotonic()
    try:
        run_batch(src, out, jobs=1, formats=("md",))
    finally:
        render._letters.cache_clear()
    assert time.monotonic() - started < 2 * BOUND
    import csv

    with open(out / "worklist.csv", encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_status = {row["status"] for row in rows}
    assert len(rows) == 2 and "error" in by_status, rows
    bad = [row for row in rows if row["status"] == "error"][0]
    text = " ".join(bad.values())
    # the clock or the work budget stops it, whichever comes first on this machine
    assert "letter.md.j2" in text and ("longer than" in text or "in all" in text) and "Traceback" not in text
    good = [row for row in rows if row["status"] != "error"]
    assert good and list((out / "letters").glob("*.md"))
