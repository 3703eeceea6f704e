"""Small things a user's second hour met in search (issue 41): exported time ranges of whole clips and of GIFs
whose header gives no duration, and a player a browser can play for a GIF source."""

from __future__ import annotations

from search.export import _row
from search.indexer import _duration
from search.moments import Hit
from search.search_page import moment


def test_a_whole_clip_exports_from_0_to_its_duration_and_a_gif_to_its_decoded_end():
    assert _duration({"duration_s": 8.0, "decoded_s": 7.9}) == 8.0
    assert _duration({"duration_s": None, "decoded_s": 3.4}) == 3.4  # a GIF without a header duration: where its frames ended
    clip = _row({"key": "a", "video_id": "a", "captions": ["x"], "duration_s": 8.0})
    assert (clip["start_s"], clip["end_s"]) == (0.0, 8.0)
    window = _row({"key": "b_10-20", "video_id": "b", "captions": [], "duration_s": 60.0, "segment": {"start_s": 10.0, "end_s": 20.0}})
    assert (window["start_s"], window["end_s"]) == (10.0, 20.0)


def test_a_gif_source_is_shown_as_an_image_and_a_video_in_a_player():
    def hit(source: str) -> Hit:
        return Hit(0, 0.5, "coarse", {"key": "k_0-5", "source_file": source, "segment": {"start_s": 0.0, "end_s": 5.0}, "duration_s": 9.0})

    def play(record: dict) -> str:
        return f"/source/{record['key']}#t=0,5"

    gif = moment(hit("loop.gif"), play)
    assert "<img class='moment' src='/source/k_0-5'" in gif and "<video" not in gif
    mp4 = moment(hit("long.mp4"), play)
    assert "<video class='moment'" in mp4 and "#t=0,5" in mp4
