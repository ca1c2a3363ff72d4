"""The doctor's HTML page: one self-contained file (thumbnails inlined as data URIs, no scripts, no links out), the
findings worst first, each with its images' thumbnails side by side (a cluster of near-duplicates shown together)."""

from __future__ import annotations

import html
from pathlib import Path

from sdft.atomic import write_text
from sdft.prep.doctor.findings import Severity
from sdft.prep.doctor.run import DoctorResult

COLOURS = {Severity.severe: "#c62828", Severity.warn: "#ef6c00", Severity.info: "#546e7a"}
STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}
h1{font-size:22px} h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
.f{background:#fff;border-left:6px solid;margin:10px 0;padding:8px 12px;box-shadow:0 1px 2px #0002}
.sev{font-weight:bold;text-transform:uppercase;font-size:12px} .adv{color:#2e7d32;font-size:14px}
img{border:1px solid #bbb}
.imgs{display:flex;flex-wrap:wrap;gap:6px;margin-top:6px} figure{margin:0;text-align:center}
figcaption{font-size:11px;max-width:160px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.missing{width:120px;height:90px;background:#eee;display:flex;align-items:center;justify-content:center;font-size:11px}
"""


def page(result: DoctorResult, title: str = "sdft data doctor") -> str:
    e = html.escape
    counts = ", ".join(f"{result.count(s)} {s.name}" for s in reversed(Severity))
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1><p>{sum(len(d.items) for d in result.datasets)} images; findings: {e(counts)}.</p>",
        "<h2>Sets</h2><table><tr><th>dataset</th><th>set</th><th>kind</th><th>images</th><th>repeats</th>"
        "<th>samples / epoch</th></tr>",
    ]
    for r in result.sets:
        parts.append(
            f"<tr><td>{e(r['dataset'])}</td><td>{e(r['set'])}</td><td>{r['kind']}</td><td>{r['images']}</td>"
            f"<td>{r['repeats']}</td><td>{r['samples']}</td></tr>"
        )
    parts.append("</table><h2>Findings, worst first</h2>")
    if not result.findings:
        parts.append("<p>No findings.</p>")
    for f in result.findings:
        colour = COLOURS[f.severity]
        parts.append(
            f"<div class='f {f.severity.name}' style='border-color:{colour}'><span class='sev' style='color:{colour}'>"
            f"{f.severity.name}</span> <b>{e(f.check)}</b>: {e(f.message)}<div class='adv'>&rarr; {e(f.advice)}</div>"
        )
        if f.files:
            parts.append("<div class='imgs'>")
            for p in f.files[:24]:
                uri = result.thumbs.get(Path(p))
                img = f"<img src='{uri}' alt='{e(Path(p).name)}'>" if uri else "<div class='missing'>no preview</div>"
                parts.append(f"<figure>{img}<figcaption title='{e(str(p))}'>{e(Path(p).name)}</figcaption></figure>")
            if len(f.files) > 24:
                parts.append(f"<span>... {len(f.files) - 24} more</span>")
            parts.append("</div>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(result: DoctorResult, path: Path) -> Path:
    write_text(path, page(result))
    return path
