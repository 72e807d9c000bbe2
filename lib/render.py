"""How the book shows results: numbers as text, tables as HTML blocks with their caption and notes (units, scale,
provenance), the "not run at this scale yet" block and links to the executed stage notebooks.

lib.report computes the tables (pandas DataFrames read from the results files); this module only formats them.
"""
import html
import math
import re
from pathlib import Path

from lib import REPO_ROOT, findings, paper, report
from lib.results import SCALE_LABELS

GLUE_UNITS = ("dev set, percent points (x100). MCC: Matthews correlation; acc/F1: mean of accuracy and F1; "
              "P/S: mean of Pearson and Spearman correlations; MNLI-m: matched dev set. GLUE score: macro average "
              "of the tasks that count at that scale (paper rows: the paper's scores on the same tasks).")
SINGLE_CLASS_NOTE = (f"'{report.SINGLE_CLASS_COLUMN}': per task, how many of the model's fine-tuning seeds predicted one class "
                     "for the whole dev set (STS-B: one value): such a model learned no more than a constant answer, "
                     "which scores the dev set's majority-class rate in accuracy (seed statistics: majority_rate) and "
                     "0 in MCC. A task counts toward the GLUE score only when the teacher beats its majority-class floor (row "
                     f"'{report.FLOOR_ROW}').")

def scale_label(profile, record=None):
    """What a profile's numbers may be called: the scale its results file recorded, else the profile's label."""
    prov = record.provenance if record is not None else {}
    return prov.get("scale") or SCALE_LABELS.get(profile, f"profile {profile}")


def format_duration(seconds):
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "unknown"
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def hardware_text(hw):
    """'1x Tesla T4 (15.6 GB, compute 7.5); 8 CPU cores' from a provenance hardware block."""
    if not hw:
        return "hardware not recorded"
    cpu = f"{hw.get('cpu_count', '?')} CPU cores"
    if hw.get("processor"):
        cpu += f" ({hw['processor']})"
    if hw.get("gpu"):
        gpu = f"{hw.get('gpu_count', 1)}x {hw['gpu']}"
        extras = [f"{hw['gpu_memory_gb']} GB" if hw.get("gpu_memory_gb") else None,
                  f"compute {hw['compute_capability']}" if hw.get("compute_capability") else None]
        extras = [e for e in extras if e]
        return f"{gpu} ({', '.join(extras)}); {cpu}" if extras else f"{gpu}; {cpu}"
    return f"no GPU; {cpu}"


def provenance_line(record):
    """One line: hardware, wall time, commit and date of a results record."""
    prov = record.provenance
    commit = prov.get("git_commit") or "unknown"
    dirty = commit.endswith("-dirty")
    commit = commit.removesuffix("-dirty")
    commit = commit[:10] + (" with uncommitted changes" if dirty else "")
    return (f"{hardware_text(prov.get('hardware'))}; wall time {format_duration(record.wall_time_s)}; "
            f"commit {commit}; written {prov.get('created', 'at an unknown date')}")


def format_table(table, digits=1):
    """Numbers as text with ``digits`` decimals, missing values as an em dash (for display only)."""
    import numpy as np
    import pandas as pd

    def cell(value):
        if value is None or (pd.api.types.is_scalar(value) and not isinstance(value, str) and pd.isna(value)):
            return "\u2014"
        if isinstance(value, (bool, np.bool_)):
            return str(value)
        if isinstance(value, (int, np.integer)):
            return f"{value:,}"
        if isinstance(value, (float, np.floating)):
            return f"{value:,.{digits}f}"
        return str(value)
    return table.apply(lambda column: column.map(cell))


NUMBER = re.compile(r"^[-+\u2212]?(\d[\d,]*)?\.?\d+(e[-+]?\d+)?( ?(%|pts|s|ms|M|MB|GB|x|\u00d7))?$")


def numeric_columns(table, text):
    """Which columns of ``table`` (its formatted ``text``: format_table) hold numbers: a numeric dtype, or only
    numbers with an optional unit and missing values. They are right-aligned and never wrapped; the others are
    left-aligned text that wraps."""
    import pandas as pd
    flags = []
    for i, column in enumerate(table.columns):
        dtype = table.dtypes.iloc[i]
        if pd.api.types.is_bool_dtype(dtype):
            flags.append(False)
        elif pd.api.types.is_numeric_dtype(dtype):
            flags.append(True)
        else:
            values = [v for v in text.iloc[:, i] if v != "\u2014"]
            flags.append(bool(values) and all(NUMBER.match(v) for v in values))
    return flags


def _breakable(table_html):
    """Break opportunities after '/' and '_' in the cells' text of a table's HTML: hub ids, parameter names and
    paths may wrap there."""
    return re.sub(r"(<t[dh][^>]*>)([^<]+)(</t[dh]>)", lambda cell: cell.group(1) + re.sub(
        r"(?<=[/_])(?=[^\s/_])", "<wbr>", cell.group(2)) + cell.group(3), table_html)


def html_table(table, caption, notes=(), digits=1):
    """A table with its caption above and notes (units, scale, provenance) below, as one HTML block. Number
    columns carry the class "num" (right-aligned, unwrapped), text cells may wrap after '/' and '_', so that the
    table fits the page's content column."""
    text = format_table(table, digits)
    numeric = numeric_columns(table, text)
    body = text.to_html(escape=True, border=0, classes="report-table")
    body = body.replace(">\n  <thead>", f">\n  <caption>{html.escape(caption)}</caption>\n  <thead>", 1)
    head, _, rest = body.partition("</thead>")

    def classify_row(match):
        cells = iter(numeric)
        return re.sub(r"<td>(.*?)</td>",
                      lambda cell: f'<td class="num">{cell.group(1)}</td>' if next(cells, False)
                      else f"<td>{cell.group(1)}</td>", match.group(0), flags=re.S)
    rest = re.sub(r"<tr>.*?</tr>", classify_row, rest, flags=re.S)
    if table.columns.nlevels == 1:  # the column headers: the last len(columns) cells of the first header row
        def classify_header(match):
            cells = re.findall(r"<th[^>]*>.*?</th>", match.group(2), flags=re.S)
            labels = cells[len(cells) - len(numeric):]
            out = cells[:len(cells) - len(numeric)] + [
                (cell.replace("<th", '<th class="num"', 1) if flag else cell) for cell, flag in zip(labels, numeric)]
            return match.group(1) + "\n      ".join(out) + match.group(3)
        head = re.sub(r"(<thead>\s*<tr[^>]*>\s*)(.*?)(\s*</tr>)", classify_header, head, count=1, flags=re.S)
    notes_html = "".join(f'<p class="report-note">{html.escape(n)}</p>' for n in notes if n)
    return f'<div class="report-block">{_breakable(head + "</thead>" + rest)}{notes_html}</div>'


def scale_notes(profile, record):
    """The two lines printed under every table: the scale, and the provenance of the results file."""
    return [f"Scale: {scale_label(profile, record)}.", f"Provenance: {provenance_line(record)}."]


PAPER_NOTE = (f"Paper rows: {paper.PAPER}, typed from the paper into lib/paper.py; they are the reference, "
              "not our measurements.")


def not_run_html(profile, name):
    return (f'<p class="report-not-run"><strong>Not run at this scale yet</strong>: no '
            f'<code>results/{html.escape(profile)}/{html.escape(name)}.json</code>. Produce it with '
            f'<code>{html.escape(report.reproduce_command(profile, name))}</code>.</p>')


def details_html(summary, inner):
    """A collapsed block (seed statistics and other detail under a table)."""
    return f"<details class=\"report-details\"><summary>{html.escape(summary)}</summary>{inner}</details>"


def stage_page(profile, stem, toc=REPO_ROOT / "_toc.yml"):
    """Relative URL of a stage notebook's page in the built book, or None when the toc does not list it."""
    entry = f"stages/{profile}/{stem}"
    try:
        listed = entry in Path(toc).read_text().split()  # "- file: stages/cpu/03_glue" -> a whitespace token
    except OSError:
        return None
    return f"{entry}.html" if listed else None


def stage_link_html(profile, stem):
    url = stage_page(profile, stem)
    if url is None:
        return ""
    return f'<p class="report-note">Executed notebook: <a href="{url}">{html.escape(stem)} ({profile})</a>.</p>'


SCORECARD_COLUMNS = ("claim", "paper (reference)", "measured", "scale", "seeds", "floor", "noise", "verdict", "note")


SCORECARD_DETAIL = "note"  # printed under its claim's row, across the table, with the evidence link
SCORECARD_NUMBERS = ("paper (reference)", "measured", "seeds", "noise")  # right-aligned, may wrap


def _scorecard_text(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "\u2014"
    return f"{int(value)}" if isinstance(value, float) and value.is_integer() else str(value)


def scorecard_html(card, caption="Scorecard: each claim of the paper, as measured here"):
    """lib.findings.scorecard as an HTML table that fits the page's content column: one row of figures per claim
    (the verdict coloured by class), its note and evidence link on a row under it across the table (each claim is
    one <tbody>), the scale in the caption when every measured row has the same one, and notes stating the
    resolution rule and the verdict rules once."""
    rows = card.to_dict("records")
    scales = {_scorecard_text(row.get("scale")) for row in rows} - {"\u2014"}
    one_scale = len(scales) == 1
    columns = [c for c in SCORECARD_COLUMNS if c != SCORECARD_DETAIL and not (one_scale and c == "scale")]
    if one_scale:
        caption = f"{caption} (scale: {next(iter(scales))})"

    def css(column, text):
        classes = [f"verdict-{text.split()[0]}" if column == "verdict" else "",
                   "scorecard-claim" if column == "claim" else "", "right" if column in SCORECARD_NUMBERS else ""]
        classes = " ".join(c for c in classes if c)
        return f' class="{classes}"' if classes else ""

    head = "".join(f"<th{css(c, c) if c != 'verdict' else ''}>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = "".join(f"<td{css(c, _scorecard_text(row.get(c)))}>{html.escape(_scorecard_text(row.get(c)))}</td>"
                        for c in columns)
        note = _scorecard_text(row.get(SCORECARD_DETAIL))
        note = "" if note in ("", "\u2014") else f"{html.escape(note)} "
        detail = (f'<tr class="scorecard-detail"><td colspan="{len(columns)}">{note}'
                  f'<a href="{html.escape(row["evidence"])}">evidence</a></td></tr>')
        body.append(f'<tbody><tr class="scorecard-row">{cells}</tr>{detail}</tbody>')
    notes = [f"Resolution rule: {report.RESOLUTION_RULE}", f"Verdicts: {findings.VERDICT_RULES}",
             f"Tasks that count: {report.COUNTED_RULE}",
             f"Held-out notes (Table 4 rows; the verdict stays on GLUE, the paper's measure): {report.HELDOUT_RULE}",
             "Scale: the largest real scale with results (paper, then t4, then cpu); smoke-scale runs never enter "
             "this table. Seeds: fine-tuning seeds per model. Floor: the score of a constant (majority-class) "
             "answer, and the undistilled student (teacher-layer initialisation, never trained). Noise: the larger "
             "seed range (max - min) of the two sides compared. Under each claim: its note and the page with the "
             "evidence.", PAPER_NOTE]
    notes_html = "".join(f'<p class="report-note">{html.escape(n)}</p>' for n in notes)
    return (f'<div class="report-block"><table class="report-table scorecard"><caption>{html.escape(caption)}'
            f'</caption><thead><tr>{head}</tr></thead>{"".join(body)}</table>{notes_html}</div>')
