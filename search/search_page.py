"""The search page's HTML: the search form, a result list of frame strips, a video's frames, errors.

Plain server-rendered HTML without scripts: it works in any browser, behind any proxy, and a
Content-Security-Policy of ``'self'`` holds. Links name videos by their key (URL-quoted), not by
row number, so a page rendered before the index was swapped for a newer one still links to the
same videos.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from urllib.parse import quote

from search.answers import stages_text
from search.moments import Hit, moment_text
from search.searcher import SearchResult

PlayUrl = Callable[[dict], "str | None"]  # a row's record -> where its source video plays from, if anywhere

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
form{display:flex;gap:.5em;margin-bottom:1em} input[name=q]{flex:1;font-size:1.1em;padding:.4em}
button{font-size:1.1em;padding:.4em 1em} .note{color:#666;font-size:.9em} .error{color:#a00;font-weight:600}
table{border-collapse:collapse;width:100%} td{border-top:1px solid #ddd;padding:.5em;vertical-align:top}
td.score{font-family:monospace;white-space:nowrap} img{display:block} ul{margin:0;padding-left:1.2em}
.frames img{display:inline-block;margin:2px;max-width:240px} .range{font-weight:600;margin:.2em 0} video{display:block;margin:.3em 0}
"""


def key_path(key: str) -> str:
    """A key as one URL path segment (keys are [A-Za-z0-9_-] from the builder; others are quoted)."""
    return quote(key, safe="")


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>")  # fmt: skip


def header(videos: int, sim_header: str, step: int) -> str:
    return f"<h1>Video search</h1><p class='note'>{videos:,} videos indexed with {html.escape(sim_header)} (checkpoint step {step})</p>"


def search_form(query: str, k: int) -> str:
    """The text box, and a file picker that searches with a video or image (POST /search/file, multipart)."""
    return (f"<form action='/' method='get' id='search'><input name='q' value='{html.escape(query, quote=True)}' autofocus "
            f"placeholder='describe a video, e.g. a man is cooking pasta'><input type='hidden' name='k' value='{k}'>"
            "<button type='submit'>Search</button></form>"
            f"<form action='/search/file?k={k}' method='post' enctype='multipart/form-data' id='search-file' class='note'>"
            "or find videos like a file (a video, an image, or a vector as .npy): "
            "<input type='file' name='file' accept='video/*,image/*,.npy'>"
            "<button type='submit'>Search by file</button></form>")  # fmt: skip


IMAGE_SOURCES = (".gif", ".webp", ".png", ".jpg", ".jpeg", ".apng")  # sources a browser shows as an image, not as a video


def moment(hit: Hit, play_url: PlayUrl) -> str:
    """A moment's time range, a player that starts at it (where the service reaches the source video),
    and the video's other moments, collapsed."""
    text = moment_text(hit.record)
    if not text:
        return ""
    url = play_url(hit.record)
    player = ""
    if url and (hit.record.get("source_file") or "").lower().endswith(IMAGE_SOURCES):  # no browser's <video> plays a GIF: an image does
        still = html.escape(url.split("#", 1)[0], quote=True)
        player = f"<img class='moment' src='{still}' width='320' alt='the source, from its start'><div class='note'>(plays from its start)</div>"
    elif url:
        player = f"<video class='moment' controls preload='metadata' src='{html.escape(url, quote=True)}' width='320'></video>"
    others = "".join(
        f"<li><a href='/video/{key_path(m.record['key'])}'>{html.escape(moment_text(m.record))}</a> <span class='note'>{m.score:.4f}</span></li>"
        for m in hit.moments
    )
    more = f"<details class='moments'><summary>{len(hit.moments)} more moment(s) of this video</summary><ul>{others}</ul></details>" if others else ""
    return f"<div class='range'>moment: {html.escape(text)}</div>{player}{more}"


def results(result: SearchResult, total_videos: int, k: int = 10, play_url: PlayUrl = lambda _: None, grouped: bool = False) -> str:
    timing = ", ".join(f"{name} {value:.1f} ms" for name, value in result.milliseconds.items())
    rows = []
    for rank, hit in enumerate(result.hits, 1):
        record, link = hit.record, key_path(hit.record["key"])
        captions = "".join(f"<li>{html.escape(c)}</li>" for c in record["captions"][:5]) or "<li class='note'>(no caption)</li>"
        more = f"<div class='note'>+{len(record['captions']) - 5} more</div>" if len(record["captions"]) > 5 else ""
        rows.append(
            f"<tr class='hit'><td>{rank}</td><td class='score'>{hit.score:.4f}<div class='note'>{hit.stage}</div></td>"
            f"<td><a href='/video/{link}'><img class='thumb' src='/thumb/{link}' alt='{html.escape(record['key'], quote=True)}'></a></td>"
            f"<td><a class='key' href='/video/{link}'>{html.escape(record['key'])}</a>{moment(hit, play_url)}<ul>{captions}</ul>{more}"
            f"<a class='like' href='/?like={link}&amp;k={k}'>more like this</a> "
            f"<a class='vector' href='/vector/{link}' title='its coarse video vector, as .npy'>vector</a></td></tr>"
        )
    note = f"<p class='note' id='query-note'>{html.escape(result.query)}: {html.escape(result.note)}</p>" if result.note else ""
    # an index of windows holds more entries than videos: a grouped answer counts videos, among the indexed entries
    shown = (f"{len(result.hits)} video{'s' if len(result.hits) != 1 else ''} found among {total_videos:,} indexed windows and clips"
             if grouped else f"{len(result.hits)} of {total_videos:,} videos")  # fmt: skip
    return (f"{note}<p class='note'>{shown}; {result.method} search, "
            f"{stages_text(result)}; {html.escape(timing)}</p><table id='results'>{''.join(rows)}</table>")  # fmt: skip


def video(record: dict, frames: int) -> str:
    link = key_path(record["key"])
    strip = "".join(f"<img class='frame' src='/frame/{link}/{i}' alt='frame {i}'>" for i in range(frames))
    captions = "".join(f"<li>{html.escape(c)}</li>" for c in record["captions"]) or "<li class='note'>(no caption)</li>"
    details = {k: record.get(k) for k in ("video_id", "source_file", "duration_s", "segment", "shard")}
    facts = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in details.items() if v is not None)
    return (f"<p><a href='/'>search</a></p><h1>{html.escape(record['key'])}</h1><div class='frames'>{strip}</div>"
            f"<h2>Captions</h2><ul>{captions}</ul><h2>Sample</h2><table>{facts}</table>")  # fmt: skip


def error(status: int, phrase: str, message: str) -> str:
    return f"<h1>{status} {html.escape(phrase)}</h1><p class='error'>{html.escape(message)}</p><p><a href='/'>search</a></p>"
