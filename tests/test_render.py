"""lib.render: how the book prints report tables (numbers as text, HTML blocks, provenance and scale lines)."""
import pytest
from test_report import _write, write_example_results

from lib import render, report


@pytest.fixture
def results_root(tmp_path):
    return write_example_results(tmp_path)


def test_provenance_line_and_scale(results_root):
    record = report.load("cpu", "latency", results_root)
    line = render.provenance_line(record)
    assert "no GPU; 2 CPU cores" in line and "12 s" in line and "0123456789 with uncommitted changes" in line
    gpu = _write(results_root, "t4", "glue", {"summary": []}, gpu="Tesla T4", wall=7200)
    assert "1x Tesla T4 (14.6 GB, compute 7.5)" in render.provenance_line(gpu)
    assert "2.0 h" in render.provenance_line(gpu)
    assert render.scale_notes("cpu", record)[0] == "Scale: cpu scale label."
    assert "not a finding" in render.scale_label("smoke")  # from lib.results when the record has none


def test_html_table_has_caption_units_and_notes(results_root):
    table = report.glue_table(report.load("cpu", "glue", results_root))
    block = render.html_table(table, "Table 1 <GLUE>", notes=["Scale: x.", None])
    assert "<caption>Table 1 &lt;GLUE&gt;</caption>" in block
    assert block.count('class="report-note"') == 1
    assert "\u2014" not in block.split("</caption>")[0]


def test_format_table_missing_values_thousands_and_digits():
    import pandas as pd
    table = pd.DataFrame({"a": [1234567, None], "b": [0.12345, float("nan")], "c": ["x", True]})
    text = render.format_table(table, digits=2)
    assert list(text["a"]) == ["1,234,567.00", "\u2014"]  # a column with a gap is float in pandas
    assert list(text["b"]) == ["0.12", "\u2014"] and list(text["c"]) == ["x", "True"]
    # a nullable integer column (a count with a gap) keeps whole numbers, and its gap (pd.NA) is a dash too
    counts = render.format_table(pd.DataFrame({"n": pd.array([273170, None], dtype="Int64")}))
    assert list(counts["n"]) == ["273,170", "\u2014"]


def test_not_run_block_names_the_file_and_the_command():
    block = render.not_run_html("t4", "glue")
    assert "<code>results/t4/glue.json</code>" in block
    assert "make reproduce PROFILE=t4 STAGES=glue" in block and report.not_run("t4", "glue").startswith("Not run")


def test_format_duration_units():
    assert [render.format_duration(s) for s in (None, 12, 600, 7200)] == ["unknown", "12 s", "10.0 min", "2.0 h"]


def test_stage_link_only_for_pages_in_the_toc(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text("- file: stages/cpu/03_glue\n")
    assert render.stage_page("cpu", "03_glue", toc) == "stages/cpu/03_glue.html"
    assert render.stage_page("t4", "03_glue", toc) is None and render.stage_page("cpu", "x", tmp_path / "none") is None


def test_scorecard_html_links_each_row_and_states_the_rules():
    import pandas as pd
    card = pd.DataFrame([{"claim": "a <claim>", "paper (reference)": "97.0 %", "measured": None, "scale": "cpu",
                          "seeds": 3.0, "floor": "\u2014", "noise": "1.0 pts", "verdict": "not run", "note": "",
                          "evidence": "table1_glue.html"}])
    html = render.scorecard_html(card)
    assert '<td class="scorecard-claim">a &lt;claim&gt;</td>' in html and '<td class="verdict-not">not run</td>' in html
    assert '<td class="right">3</td>' in html and '<a href="table1_glue.html">evidence</a>' in html
    assert report.RESOLUTION_RULE in html.replace("&#x27;", "'") and "majority-class floor" in html


def test_scorecard_html_fits_a_column_note_and_evidence_under_each_claim():
    import pandas as pd
    rows = [{"claim": f"claim {i}", "paper (reference)": "97.0 %", "measured": "55.3 %", "scale": scale,
             "seeds": 3.0, "floor": "\u2014", "noise": "1.0 pts", "verdict": "confirmed", "note": note,
             "evidence": f"page{i}.html"} for i, (scale, note) in enumerate([("cpu", "2 counted tasks"), ("cpu", ""),
                                                                            ("\u2014", None)])]
    html = render.scorecard_html(pd.DataFrame(rows))
    # one scale: named once in the caption, no column; the note leaves the row for a full-width line under it
    assert "(scale: cpu)</caption>" in html and "<th>scale</th>" not in html and "<th>note</th>" not in html
    head = html.split("<thead>")[1].split("</thead>")[0]
    assert head.count("<th") == len(render.SCORECARD_COLUMNS) - 2
    assert html.count("<tbody>") == 3 and html.count('<tr class="scorecard-detail">') == 3
    columns = len(render.SCORECARD_COLUMNS) - 2
    assert f'<td colspan="{columns}">2 counted tasks <a href="page0.html">evidence</a>' in html
    assert f'<td colspan="{columns}"><a href="page2.html">evidence</a></td>' in html  # no note: the link alone
    rows[1]["scale"] = "t4"  # two scales: the column stays
    assert "<th>scale</th>" in render.scorecard_html(pd.DataFrame(rows))


def test_html_table_aligns_numbers_right_and_lets_text_wrap():
    import pandas as pd
    table = pd.DataFrame({"meaning": ["a long text", "x"], "value": ["google-bert/bert-base-uncased", "56"],
                          "n": [1234, None], "ratio": ["98.1 %", "\u2014"], "flag": [True, False]},
                         index=pd.Index(["gradient_accumulation_steps", "seed"], name="parameter"))
    assert render.numeric_columns(table, render.format_table(table)) == [False, False, True, True, False]
    block = render.html_table(table, "a_caption")
    assert '<td class="num">1,234.0</td>' in block and '<td class="num">98.1 %</td>' in block
    assert '<th class="num">n</th>' in block and "<th>meaning</th>" in block and "<td>a long text</td>" in block
    assert "<td>google-bert/<wbr>bert-base-uncased</td>" in block
    assert "<th>gradient_<wbr>accumulation_<wbr>steps</th>" in block
    assert "<caption>a_caption</caption>" in block  # breaks only inside cells
