"""Showing token relevance: ANSI terminal highlights (``fastxai explain --text``)
and HTML pages of highlighted sentences (``fastxai demo``'s ``text.html``).

Non-negative maps are coloured by rank within each sentence (lowest white,
highest red), signed maps by the largest ``|relevance|`` (red positive, blue
negative); [CLS], [SEP] and padding are not shown.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np

_SPECIALS = ("[CLS]", "[SEP]", "[PAD]")


def token_strings(tokenizer: Any, input_ids: Any, attention_mask: Any) -> list[list[str]]:
    """WordPiece strings of each sentence's real tokens (padding dropped)."""
    ids, mask = np.asarray(input_ids), np.asarray(attention_mask)
    return [
        [tokenizer.id_to_token(int(i)) for i, m in zip(row, row_mask, strict=True) if m]
        for row, row_mask in zip(ids, mask, strict=True)
    ]


def _scaled(values: Sequence[float], tokens: Sequence[str]) -> np.ndarray:
    """Relevance for display: a signed map over ``[-1, 1]`` by its largest magnitude;
    a non-negative one (RISE, FEX: probabilities) by its squared rank fraction among
    the shown tokens (lowest white, highest red, ties shared), the order the token
    metrics score. A
    min-max scale painted nearly every token of trained FEX red: its keep
    probabilities sit close to 1 on all but the least useful tokens."""
    from scipy.stats import rankdata

    values = np.asarray(values, np.float64)
    shown = np.asarray([t not in _SPECIALS for t in tokens], bool)
    if not shown.any():
        return np.zeros_like(values)
    low, high = values[shown].min(), values[shown].max()
    if low >= 0 and high > low:
        out = np.zeros_like(values)
        ranks = rankdata(values[shown], method="average") - 1.0
        out[shown] = (ranks / max(ranks.max(), 1.0)) ** 2  # the top tokens stand out
        return out
    top = np.max(np.abs(values[shown]))
    return values / top if top > 0 else np.zeros_like(values)


def _rgb(weight: float) -> tuple[int, int, int]:
    """White → red for positive weights, white → blue for negative ones."""
    fade = int(round(255 * (1.0 - min(abs(weight), 1.0))))
    return (255, fade, fade) if weight >= 0 else (fade, fade, 255)


def _join(token: str, first: bool) -> tuple[str, str]:
    """``(separator, text)``: WordPiece ``##`` pieces attach to the previous token."""
    if token.startswith("##"):
        return "", token[2:]
    return ("" if first else " "), token


def ansi_highlight(tokens: Sequence[str], values: Sequence[float]) -> str:
    """The sentence with each token's background coloured by its relevance (24-bit ANSI).

    [CLS]/[SEP]/[PAD] are left out; red = relevant for the class, blue = against.
    """
    if len(tokens) != len(values):
        raise ValueError(
            f"values must have one entry per token; got {len(values)} for {len(tokens)}"
        )
    weights = _scaled(values, tokens)
    out = []
    for token, weight in zip(tokens, weights, strict=True):
        if token in _SPECIALS:
            continue
        sep, text = _join(token, not out)
        r, g, b = _rgb(weight)
        ink = 255 if abs(weight) > 0.6 else 0
        out.append(f"{sep}\x1b[48;2;{r};{g};{b}m\x1b[38;2;{ink};{ink};{ink}m{text}\x1b[0m")
    return "".join(out)


def html_sentence(
    tokens: Sequence[str], values: Sequence[float], evidence: Sequence[bool] | None = None
) -> str:
    """One sentence as HTML spans coloured by relevance (evidence tokens underlined)."""
    if len(tokens) != len(values):
        raise ValueError(
            f"values must have one entry per token; got {len(values)} for {len(tokens)}"
        )
    weights = _scaled(values, tokens)
    evidence = [False] * len(tokens) if evidence is None else list(evidence)
    parts, first = [], True
    for token, weight, value, is_evidence in zip(tokens, weights, values, evidence, strict=True):
        if token in _SPECIALS:
            continue
        sep, text = _join(token, first)
        first = False
        r, g, b = _rgb(float(weight))
        cls = ' class="ev"' if is_evidence else ""
        ink = "#fff" if abs(float(weight)) > 0.6 else "#000"
        parts.append(
            f'{sep}<span{cls} style="background:rgb({r},{g},{b});color:{ink}" '
            f'title="{float(value):.4g}">{html.escape(text)}</span>'
        )
    return "".join(parts)


def html_page(title: str, sections: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> str:
    """A self-contained HTML page: ``sections`` of ``(heading, [(label, sentence_html)])``."""
    body = []
    for heading, rows in sections:
        body.append(f"<h2>{html.escape(heading)}</h2><table>")
        body.extend(
            f'<tr><td class="label">{html.escape(label)}</td><td class="s">{sentence}</td></tr>'
            for label, sentence in rows
        )
        body.append("</table>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:16px;max-width:1100px}"
        "td{padding:3px 8px;vertical-align:top}td.label{color:#555;white-space:nowrap;"
        "font-size:13px}td.s{font-family:monospace;font-size:15px;line-height:1.7}"
        "span{padding:1px 2px;border-radius:3px}span.ev{text-decoration:underline 2px}"
        "table{border-collapse:collapse}tr{border-bottom:1px solid #eee}"
        "</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        "<p>Red: relevant to the explained class; blue: against it; "
        "underlined: the planted evidence tokens (benchmark sentences). Each "
        "sentence is scaled on its own (non-negative maps: by rank, lowest white to "
        "highest red; signed maps: by the largest |relevance|); hover a token for its "
        "value.</p>" + "".join(body) + "</body></html>"
    )


def text_page(
    tokenizer: Any, bench: Any, maps: dict[str, np.ndarray], num_sentences: int = 8
) -> str:
    """HTML page: the first ``num_sentences`` sentences highlighted by every method."""
    strings = token_strings(tokenizer, bench.input_ids, bench.attention_mask)
    sections = []
    for i in range(min(num_sentences, len(strings))):
        length = len(strings[i])
        label = "positive" if int(bench.labels[i]) else "negative"
        rows = [
            (name, html_sentence(strings[i], attribution[i, :length], bench.evidence[i, :length]))
            for name, attribution in maps.items()
        ]
        sections.append((f"sentence {i} (label: {label})", rows))
    return html_page("fastxai_jax: token attributions on the text benchmark", sections)
