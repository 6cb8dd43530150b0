"""The review page's HTML: fragments (summary, inline SVG charts, confusion matrix, failed files) poured into the
page template shipped beside this module (review_page.html: its CSS and JS, inline). Every text that comes from
a file is escaped; the cards' data travels as one JSON block that the page's script reads."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from datetime import datetime
from html import escape
from importlib import resources
from pathlib import Path

from infer.review_data import DIGITS, HISTOGRAM_BINS, Card, RunFacts, Tally
from infer.review_images import Pictures

TEMPLATE = "review_page.html"
FAILED = "failed"


def page(template: str, slots: dict[str, str]) -> str:
    for name, value in slots.items():
        template = template.replace(f"<!--slot:{name}-->", value)
    return template


def load_template() -> str:
    return resources.files("infer").joinpath(TEMPLATE).read_text(encoding="utf-8")


def script_json(value: object) -> str:
    """JSON that cannot end its <script> element early, whatever the paths in it say."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z") if moment else ""


def facts_list(items: list[tuple[str, str, bool]]) -> str:
    """<dl> of (name, value, known); an unknown value is shown in the warning colour."""
    rows = "".join(f"<dt>{escape(name)}</dt><dd{'' if known else ' class=unknown'}>{escape(value)}</dd>"
                   for name, value, known in items)
    return f"<dl class=facts>{rows}</dl>"


def summary(tally: Tally, predictions: Path, facts: RunFacts | None, facts_note: str, changed_reference: str) -> str:
    def fact(name: str, value: object, shown: str) -> tuple[str, str, bool]:
        return (name, shown, True) if value is not None else (name, "unknown", False)

    f = facts or RunFacts(source="")
    items = [
        ("files (rows)", f"{tally.rows:,}", True),
        ("classified", f"{tally.classified:,}", True),
        ("failed", f"{tally.failed:,}", True),
        fact("skipped (not images)", f.skipped, f"{f.skipped or 0:,}"),
        fact("images/s", f.images_per_second, f"{f.images_per_second or 0:,.0f}"),
        fact("model sha256", f.model_sha256, f.model_sha256 or ""),
        fact("backend", f.backend, f.backend or ""),
        fact("run started", f.started, when(f.started)),
        fact("run finished", f.finished, when(f.finished)),
    ]
    items.append(("run facts from", f.source or f"the CSV alone ({facts_note.removeprefix('unknown: ')})",
                  bool(f.source)))
    items.append(("CSV", str(predictions), True))
    items.append(("changed files", f"a file modified after {changed_reference} is flagged on its card", True))
    return facts_list(items)


def labels_facts(tally: Tally) -> str:
    if tally.labels is None:
        return ""
    return facts_list([("labels", str(tally.labels.source), True), ("labelled files", f"{len(tally.labels):,}", True),
                       ("rows with a label", f"{tally.labelled:,}", True),
                       ("labels with no row", f"{tally.labels_without_row:,}", True)])


def bar_chart(counts: list[tuple[str, int]], title: str, caption: str, log: bool = False,
              low: set[int] | None = None, edges: list[tuple[int, str]] | None = None, width: int = 420,
              height: int = 170) -> str:
    """An inline SVG bar chart; `log` scales heights by log(1+count) so that small bins stay visible."""
    top, bottom, left = 16, 22, 12
    plot = height - top - bottom
    slot = (width - 2 * left) / max(len(counts), 1)
    scale = (lambda n: math.log1p(n)) if log else float
    peak = max((scale(n) for _, n in counts), default=0) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}">']
    for index, (name, count) in enumerate(counts):
        bar = plot * scale(count) / peak
        x = left + index * slot
        klass = "bar low" if low and index in low else "bar"
        parts.append(f'<rect class="{klass}" x="{x + 1:.1f}" y="{top + plot - bar:.1f}" width="{slot - 2:.1f}" '
                     f'height="{bar:.1f}"><title>{escape(name)}: {count:,}</title></rect>')
        if len(counts) <= 12:
            parts.append(f'<text x="{x + slot / 2:.1f}" y="{top + plot - bar - 3:.1f}" text-anchor="middle">'
                         f'{count:,}</text>')
        if len(counts) <= 12:
            parts.append(f'<text x="{x + slot / 2:.1f}" y="{height - 6}" text-anchor="middle">{escape(name)}</text>')
    for at, name in edges or []:  # labels between bars: the bins' edges
        parts.append(f'<text x="{left + at * slot:.1f}" y="{height - 6}" text-anchor="middle">{escape(name)}</text>')
    parts.append("</svg>")
    return f"<figure>{''.join(parts)}<figcaption>{escape(caption)}</figcaption></figure>"


def charts(tally: Tally, review: list[Card]) -> str:
    per_digit = bar_chart([(d, tally.predicted[d]) for d in DIGITS], "images per predicted digit",
                          "images per predicted digit")
    threshold = max((c.confidence for c in review), default=None)
    low = set() if threshold is None else set(range(min(int(threshold * HISTOGRAM_BINS), HISTOGRAM_BINS - 1) + 1))
    bins = [(f"{i / HISTOGRAM_BINS:.2f}", n) for i, n in enumerate(tally.histogram)]
    caption = "confidence, bins of 0.05 from 0 to 1 (heights on a log scale)"
    if threshold is not None:
        caption += f"; orange: bins holding the review queue (confidence ≤ {threshold:.3f})"
    edges = [(i, f"{i / HISTOGRAM_BINS:g}") for i in range(0, HISTOGRAM_BINS + 1, 4)]
    return per_digit + bar_chart(bins, "confidence histogram", caption, log=True, low=low, edges=edges, width=420)


def percent(part: int, whole: int) -> str:
    return f"{part / whole:.2%}" if whole else "—"


def labels_section(tally: Tally) -> str:
    """Accuracy, and the confusion matrix with each digit's recall (right) and precision (bottom)."""
    if tally.labels is None:
        return ""
    columns = [*DIGITS, FAILED]
    head = "".join(f"<th>{c}</th>" for c in columns)
    body = []
    for label in DIGITS:
        cells = []
        for prediction in columns:
            count = tally.matrix.get((label, prediction), 0)
            klass = "zero" if count == 0 else "diag" if prediction == label else "off"
            if count and prediction != FAILED:
                content = (f'<button type="button" data-label="{label}" data-prediction="{prediction}" '
                           f'title="show these images">{count:,}</button>')
            else:
                content = f"{count:,}"
            cells.append(f'<td class="{klass}">{content}</td>')
        truth = sum(tally.matrix.get((label, p), 0) for p in columns)
        recall = percent(tally.matrix.get((label, label), 0), truth)
        body.append(f"<tr><th>{label}</th>{''.join(cells)}<td class=sum>{truth:,}</td><td class=sum>{recall}</td></tr>")
    said = [sum(tally.matrix.get((label, digit), 0) for label in DIGITS) for digit in DIGITS]
    totals = "".join(f"<td class=sum>{n:,}</td>" for n in said)
    precision = "".join(f"<td class=sum>{percent(tally.matrix.get((d, d), 0), n)}</td>"
                        for d, n in zip(DIGITS, said, strict=True))
    body.append(f"<tr><th>predicted</th>{totals}<td class=sum></td><td class=sum></td><td class=sum></td></tr>")
    body.append(f"<tr><th>precision</th>{precision}<td class=sum></td><td class=sum></td><td class=sum></td></tr>")
    matrix = (f'<figure><table class="matrix"><thead><tr><th class=text>label \\ predicted</th>{head}'
              f"<th>labelled</th><th>recall</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
              "<figcaption>confusion matrix over the rows with a label: click a cell to see its images"
              "</figcaption></figure>")
    accuracy = (f'<div class="accuracy"><div class="hint">accuracy</div><div class="big" id="accuracy">'
                f"{percent(tally.correct, tally.labelled)}</div><p class=hint>"
                f'<span id="correct">{tally.correct:,}</span> right of <span id="labelled">{tally.labelled:,}</span> '
                "rows with a label; a failed file counts as wrong</p>"
                f"{labels_facts(tally)}</div>")
    return f'<section id="labels"><h2>Against the labels</h2><div class="row">{accuracy}{matrix}</div></section>'


def failed_section(tally: Tally) -> str:
    if tally.failed == 0:
        return "<h2>Failed files</h2><p class=empty>None: every file was classified.</p>"
    reasons = "".join(f"<tr><td class=text>{escape(reason)}</td><td>{count:,}</td></tr>"
                      for reason, count in sorted(tally.reasons.items(), key=lambda item: -item[1]))
    listed = "".join(
        f'<tr><td class=text>{escape(path)}</td><td class=text>{escape(reason)}</td><td><label class="fix">'
        f'<input type="text" inputmode="numeric" maxlength="1" data-path="{escape(path)}" '
        f'aria-label="right digit for {escape(path)}"></label></td></tr>'
        for path, reason in tally.failed_rows)
    more = tally.failed - len(tally.failed_rows)
    tail = f"<p class=hint>and {more:,} more: see the CSV's error column.</p>" if more else ""
    return (f"<h2>Failed files: {tally.failed:,}</h2><div class=row><table><thead><tr><th class=text>reason</th>"
            f"<th>files</th></tr></thead><tbody>{reasons}</tbody></table>"
            f'<table id="failed-files"><thead><tr><th class=text>file</th><th class=text>reason</th>'
            f"<th>right digit</th></tr></thead><tbody>{listed}</tbody></table></div>{tail}")


def card_data(card: Card) -> dict:
    return asdict(card)


def render(tally: Tally, predictions: Path, facts: RunFacts | None, facts_note: str, changed_reference: str,
           pictures: dict[str, Pictures], built: datetime) -> str:
    review = tally.review
    cards: dict[str, dict] = {}
    cells: dict[str, dict] = {}
    for card in review:
        cards[str(card.line)] = card_data(card)
    for (label, prediction), count in tally.matrix.items():
        if prediction == FAILED:
            continue
        members = tally.cell(label, prediction)
        for card in members:
            cards.setdefault(str(card.line), card_data(card))
        cells[f"{label}|{prediction}"] = {"total": count, "cards": [str(c.line) for c in members]}
    data = {"cards": cards, "review": [str(c.line) for c in review], "cells": cells, "cell_size": tally.cell_size,
            "pictures": {path: asdict(p) for path, p in pictures.items()}}
    title = f"Review of {predictions.name}"
    subtitle = f"{tally.rows:,} rows from {predictions}; page built {when(built)}"
    return page(load_template(), {
        "title": escape(title), "subtitle": escape(subtitle),
        "summary": summary(tally, predictions, facts, facts_note, changed_reference),
        "charts": charts(tally, review), "labels": labels_section(tally), "review_size": f"{len(review):,}",
        "failed": failed_section(tally), "data": script_json(data),
    })
