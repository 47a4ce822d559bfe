"""One self-contained HTML page: inline CSS and inline SVG figures, no script, nothing fetched."""

from __future__ import annotations

from html import escape

from oneml.analysis.figures import FigureOut
from oneml.analysis.tables import Table

CSS = """
:root { --ink:#111827; --muted:#6b7280; --line:#e5e7eb; --accent:#1d4ed8; --best:#eff6ff; --contender:#f8fafc;
        --worse:#fafafa; --warn:#fffbeb; --warn-line:#f59e0b; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: #f3f4f6; }
main { max-width: 1240px; margin: 0 auto; padding: 32px 28px 64px; background: #fff; min-height: 100vh; }
header { border-bottom: 3px solid var(--accent); padding-bottom: 14px; margin-bottom: 20px; }
h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 22px 0 8px; }
.meta { color: var(--muted); font-size: 13px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { flex: 1 1 150px; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.card b { display: block; font-size: 22px; }
.card span { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: 0.04em; }
.warnings { background: var(--warn); border-left: 4px solid var(--warn-line); padding: 8px 14px; margin: 14px 0;
            border-radius: 4px; }
.warnings li { margin: 2px 0; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 4px; font-size: 13px; }
th, td { text-align: left; padding: 6px 9px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #f9fafb; font-weight: 600; white-space: nowrap; }
tr.best td { background: var(--best); }
tr.best td:first-child { border-left: 3px solid var(--accent); }
tr.contender td:first-child { border-left: 3px solid #93c5fd; }
tr.worse td { color: var(--muted); }
tr.undecided td:first-child { border-left: 3px dashed var(--warn-line); }
table.decision tr.undecided td:nth-child(3) { font-weight: normal; font-style: italic; }
.banner { background: #fef2f2; border-left: 4px solid #dc2626; padding: 10px 14px; margin: 14px 0;
          border-radius: 4px; font-weight: 600; }
table.decision td:nth-child(3) { font-weight: 600; }
table.decision td:first-child { font-weight: 600; white-space: nowrap; }
.caption { color: var(--muted); font-size: 12px; margin: 2px 0 12px; }
figure { margin: 18px 0 26px; padding: 12px; border: 1px solid var(--line); border-radius: 8px; }
figure h3 { margin-top: 0; }
svg.figure { width: 100%; height: auto; display: block; }
.nodata { color: var(--muted); font-style: italic; padding: 18px; text-align: center; background: #f9fafb;
          border-radius: 6px; }
details { margin: 10px 0; }
summary { cursor: pointer; color: var(--accent); }
section.study { margin-top: 56px; }
section.study:first-child { margin-top: 0; }
"""


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def table(t: Table, heading: int = 3, title: bool = True, scope: str = "") -> str:
    """``scope`` keeps the table's id unique when several studies or groups share the page."""
    head = "".join(f"<th>{escape(c)}</th>" for c in t.columns)
    body = []
    for i, row in enumerate(t.rows):
        cls = t.classes[i] if i < len(t.classes) and t.classes[i] else ""
        cells = "".join(f"<td>{escape(cell)}</td>" for cell in row)
        body.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    parts = [f"<h{heading}>{escape(t.title)}</h{heading}>"] if title else []
    if t.caption:
        parts.append(f'<p class="caption">{escape(t.caption)}</p>')
    ident = escape(f"table-{scope}-{t.key}" if scope else f"table-{t.key}")
    parts.append(
        f'<div class="table-wrap"><table class="{escape(t.key)}" id="{ident}">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )
    return "\n".join(parts)


def figure(f: FigureOut) -> str:
    inner = f.svg if f.svg is not None else f'<p class="nodata">{escape(f.note)}</p>'
    caption = f'<p class="caption">{escape(f.caption)}</p>' if f.caption else ""
    state = "data" if f.svg is not None else "empty"
    return (
        f'<figure id="figure-{escape(f.key)}" data-state="{state}"><h3>{escape(f.title)}</h3>{inner}{caption}</figure>'
    )


def cards(items: list[tuple[str, str]]) -> str:
    inner = "".join(f'<div class="card"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for k, v in items)
    return f'<div class="cards">{inner}</div>'


def warnings(items: list[str]) -> str:
    if not items:
        return ""
    lis = "".join(f"<li>{escape(w)}</li>" for w in items)
    return f'<div class="warnings"><b>Read with care</b><ul>{lis}</ul></div>'


def banner(text: str) -> str:
    return f'<p class="banner" role="alert">{escape(text)}</p>' if text else ""


def paragraph(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{escape(text)}</p>' if cls else f"<p>{escape(text)}</p>"


def details(summary: str, inner: str) -> str:
    return f"<details><summary>{escape(summary)}</summary>{inner}</details>"
