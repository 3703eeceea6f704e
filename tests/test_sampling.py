import numpy as np
import pytest

from pipeline.keys import sanitize_key, unique_keys
from pipeline.sampling import SlicePosition, sampling_stride, select_frames


def test_stride_is_whole_ratio_of_rates():
    assert sampling_stride(3, 1) == 3
    assert sampling_stride(3, 3) == 1
    assert sampling_stride(4, 2) == 2
    with pytest.raises(ValueError, match="whole multiple"):
        sampling_stride(3, 2)
    with pytest.raises(ValueError):
        sampling_stride(1, 3)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        # hand-computed floor(linspace(0, n - 1, 12)), CLIP4Clip slice_framepos=2
        (18, [0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 17]),
        (30, [0, 2, 5, 7, 10, 13, 15, 18, 21, 23, 26, 29]),
        (13, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12]),
    ],
)
def test_uniform_selection_matches_clip4clip(n, expected):
    assert select_frames(n, 12, SlicePosition.UNIFORM) == expected


def test_head_tail_and_short_clips():
    assert select_frames(20, 12, SlicePosition.HEAD) == list(range(12))
    assert select_frames(20, 12, SlicePosition.TAIL) == list(range(8, 20))
    for position in SlicePosition:
        assert select_frames(5, 12, position) == [0, 1, 2, 3, 4]
        assert select_frames(12, 12, position) == list(range(12))


def test_uniform_selection_is_sorted_unique_and_spans_clip():
    for n in range(13, 400):
        picked = select_frames(n, 12, SlicePosition.UNIFORM)
        assert picked[0] == 0 and picked[-1] == n - 1
        assert picked == sorted(set(picked)) and len(picked) == 12
        assert picked == [int(x) for x in np.linspace(0, n - 1, 12)]


def test_keys_have_no_dots_or_slashes_and_are_unique():
    assert sanitize_key("video7020") == "video7020"
    assert sanitize_key("clip.v2/a b") == "clip_v2_a_b"
    assert sanitize_key("...") == "video"
    keys = unique_keys(["a.b", "a_b", "a/b", "a_b_2", "x"])
    assert keys == ["a_b", "a_b_2", "a_b_3", "a_b_2_2", "x"]
    assert len(set(keys)) == len(keys)
