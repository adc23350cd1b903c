"""Crack measurements: length, width, orientation and grade, against cracks of known geometry."""

import math

import numpy as np
import pytest

from unet.cracks import GRADES, grade, measure, mm_per_px_from_width, width_picture
from unet.errors import ConfigError
from unet.synthetic import CRACK_KINDS, measured_cracks


def _matched(measurement, truth):
    """The measured crack whose centre line lies nearest to a true crack's centre."""
    pts = np.array([p for arm in truth.arms for p in arm])
    cx, cy = pts[:, 0].mean(), pts[:, 1].mean()
    return min(measurement.cracks, key=lambda c: (c.cx - cx) ** 2 + (c.cy - cy) ** 2)


def test_generated_cracks_are_measured_to_the_issue_targets():
    widths, lengths, kinds, drawn = [], [], [], set()
    for seed in range(12):
        _, mask, truths = measured_cracks(seed, 420, 420, per_side=3)
        m = measure(mask)
        assert len(m.cracks) == len(truths)  # one instance per drawn crack, none split, none merged
        for t in truths:
            drawn.add(t.kind)
            c = _matched(m, t)
            tol = max(1.0, 0.1 * t.width)
            widths.append(abs(c.max_width_px - t.width) <= tol and abs(c.mean_width_px - t.width) <= tol)
            lengths.append(abs(c.length_px - t.length) <= 0.05 * t.length)
            kinds.append(c.kind == t.kind)
    assert drawn == set(CRACK_KINDS)
    assert all(widths), f"{widths.count(False)} of {len(widths)} widths off by more than max(1 px, 10%)"
    assert all(lengths), f"{lengths.count(False)} of {len(lengths)} lengths off by more than 5%"
    assert sum(kinds) / len(kinds) >= 0.95


def test_length_does_not_depend_on_direction():
    # The same straight crack, 200 px long and 5 px wide, drawn at 0, 10, 22.5, 30, 45 and 90 degrees.
    from unet.synthetic import _render

    found = []
    for deg in (0, 10, 22.5, 30, 45, 67.5, 90):
        a = math.radians(deg)
        arm = ((150 - 97.5 * math.cos(a), 150 + 97.5 * math.sin(a)), (150 + 97.5 * math.cos(a), 150 - 97.5 * math.sin(a)))
        m = measure(_render((arm,), 5.0, 300, 300))
        (c,) = m.cracks
        found.append(c.length_px)
        assert abs(c.angle_deg % 180 - deg % 180) < 2 or abs(abs(c.angle_deg - deg) - 180) < 2
    assert max(found) / min(found) < 1.04, found
    assert all(abs(x - 200) <= 10 for x in found), found


def test_scale_turns_pixels_into_millimetres_and_a_grade():
    _, mask, _ = measured_cracks(3, 300, 300, per_side=2, kinds=("vertical",), widths=(6, 6))
    px = measure(mask)
    mm = measure(mask, mm_per_px=0.5)
    assert px.grade is None and "grade" not in px.summary()
    assert mm.summary()["total_length_mm"] == pytest.approx(0.5 * px.total_length_px, abs=0.1)
    assert mm.widest.max_width_mm == pytest.approx(0.5 * px.max_width_px)
    # 6 px at 0.5 mm/px is about 3 mm: "slight" (up to 5 mm)
    assert mm.grade.category == 2 and mm.summary()["grade_name"] == "slight"
    assert measure(mask, mm_per_px=3.0).grade.category == 4  # ~18 mm: severe


@pytest.mark.parametrize("width_mm, category", [(0.05, 0), (0.1, 0), (0.2, 1), (1.0, 1), (3, 2), (5.0, 2),
                                                 (10, 3), (15, 3), (20, 4), (25, 4), (26, 5), (300, 5)])
def test_grades_follow_burlands_crack_width_table(width_mm, category):
    assert grade(width_mm).category == category
    assert [g.category for g in GRADES] == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("bad", [-1, 0, "abc", float("nan"), float("inf"), [1]])
def test_bad_scale_gets_a_clear_message(bad):
    with pytest.raises(ConfigError, match="millimetres per pixel"):
        measure(np.zeros((8, 8), bool), mm_per_px=bad)
    with pytest.raises(ConfigError, match="real width"):
        mm_per_px_from_width(bad, 4000)


def test_scale_from_the_real_width_of_the_photo():
    assert mm_per_px_from_width("2000", 4000) == 0.5
    assert mm_per_px_from_width("", 4000) is None


def test_empty_mask_specks_and_patches():
    empty = measure(np.zeros((50, 60), bool), mm_per_px=1.0)
    assert empty.count == 0 and empty.pattern == "none" and empty.summary()["grade"] == 0

    mask = np.zeros((200, 200), bool)
    mask[10:12, 10:13] = True  # a speck: noise, not a crack
    yy, xx = np.mgrid[:200, :200]
    mask |= (yy - 120) ** 2 + (xx - 120) ** 2 <= 40 ** 2  # a spalled patch, 80 px across
    mask[30:33, 40:190] = True  # a 3 px horizontal crack, 150 px long
    m = measure(mask, mm_per_px=1.0)
    assert m.specks == 1
    assert [c.kind for c in m.cracks] == ["horizontal", "patch"]
    assert m.patches[0].area_px == pytest.approx(math.pi * 40 ** 2, rel=0.02)
    assert m.max_width_px == pytest.approx(3, abs=0.5)  # the patch is not a 80 mm crack
    assert m.grade.category == 2


def test_a_crack_along_the_photo_edge_and_one_with_a_pinhole():
    mask = np.zeros((60, 200), bool)
    mask[0:5, 20:180] = True  # 5 px wide, cut by the top edge of the photo
    mask[40:47, 20:180] = True
    mask[43, 100] = False  # a pinhole inside a crack does not make it a loop
    m = measure(mask)
    assert [c.kind for c in m.cracks] == ["horizontal", "horizontal"]
    assert all(c.branches == 0 for c in m.cracks)
    widths = sorted(c.max_width_px for c in m.cracks)
    assert widths[0] == pytest.approx(5, abs=1) and widths[1] == pytest.approx(7, abs=1)


def test_width_picture_draws_centre_lines_coloured_by_width():
    image, mask, _ = measured_cracks(5, 240, 240, per_side=2)
    m = measure(mask)
    pic = width_picture(image, m, thickness=1)
    assert pic.shape == image.shape and pic.dtype == np.uint8
    yy, xx = m.centre_line[:, 0].astype(int), m.centre_line[:, 1].astype(int)
    assert (pic[yy, xx, 0] == 255).all()  # every centre-line pixel is drawn
    assert (pic[~mask] <= image[~mask]).all()  # the rest is the photo, dimmed


def test_a_new_scale_reuses_the_pixels():
    _, mask, _ = measured_cracks(4, 200, 200, per_side=2)
    px = measure(mask)
    mm = px.with_scale(2.0)
    assert mm.summary()["max_width_mm"] == pytest.approx(2 * px.max_width_px, abs=0.01)
    assert mm.summary() == measure(mask, mm_per_px=2.0).summary()
    assert mm.with_scale(None).summary() == px.summary()
