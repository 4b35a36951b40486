"""Mask-quality metrics on hand-made masks whose IoU, Dice and Boundary IoU are known in closed form."""
import numpy as np
import pytest

from robustseg.eval.mask_quality import (boundary_dilation, boundary_iou, boundary_region, dice, mask_iou,
                                         match_image, soft_dice)

H = W = 100


def square(x0, y0, a, h=H, w=W):
    m = np.zeros((h, w), bool)
    m[y0:y0 + a, x0:x0 + a] = True
    return m


def test_iou_and_dice_of_shifted_squares():
    a, s = 30, 10  # two a x a squares, the second shifted right by s: overlap (a - s) * a
    g, p = square(20, 20, a), square(20 + s, 20, a)
    inter = (a - s) * a
    assert mask_iou(g, p) == pytest.approx(inter / (2 * a * a - inter))
    assert dice(g, p) == pytest.approx((a - s) / a)
    assert mask_iou(g, g) == dice(g, g) == 1.0
    assert mask_iou(g, square(70, 70, 10)) == 0.0


def test_soft_dice_on_hand_made_probabilities():
    g = square(10, 10, 20)
    assert soft_dice(g.astype(float), g) == pytest.approx(1.0)
    half = 0.5 * g  # probability 0.5 on the object, 0 elsewhere: 2 * 0.5n / (0.5n + n)
    assert soft_dice(half, g) == pytest.approx(2 / 3)
    p = np.where(g, 0.8, 0.1)  # confident inside, a little mass everywhere outside
    n, out = g.sum(), (~g).sum()
    assert soft_dice(p, g) == pytest.approx(2 * 0.8 * n / (0.8 * n + 0.1 * out + n))
    assert soft_dice(p > 0.5, g) == pytest.approx(dice(p > 0.5, g))  # binary p: soft Dice is Dice


def test_boundary_region_is_a_frame_of_width_d():
    a, d = 30, 4
    frame = boundary_region(square(20, 20, a), d)
    assert frame.sum() == a * a - (a - 2 * d) ** 2
    assert not frame[20 + d:20 + a - d, 20 + d:20 + a - d].any()
    # the image edge counts as contour (Cheng et al.'s reference pads with background)
    assert boundary_region(np.ones((10, 10), bool), 2).sum() == 100 - 36


def test_boundary_iou_of_shifted_squares_matches_closed_form():
    a, s, d = 40, 12, 3  # s > 2d and s < a - 2d, see the derivation below
    g, p = square(20, 20, a), square(20 + s, 20, a)
    # frames F = A minus its inner (a-2d) square. F_A & F_B = (A & B) minus (A' | B') = 2d(a - s);
    # |F_A| = |F_B| = a^2 - (a-2d)^2, so IoU = 2d(a-s) / (2(a^2 - (a-2d)^2) - 2d(a-s)).
    inter = 2 * d * (a - s)
    expected = inter / (2 * (a * a - (a - 2 * d) ** 2) - inter)
    assert boundary_iou(g, p, d) == pytest.approx(expected)
    assert boundary_iou(g, g, d) == 1.0
    assert boundary_iou(g, p, d) < mask_iou(g, p)  # boundary IoU is the stricter measure


def test_boundary_iou_default_width_and_cropping_is_exact():
    assert boundary_dilation(100, 100) == round(0.02 * np.hypot(100, 100)) == 3
    assert boundary_dilation(10, 10) == 1  # never below one pixel
    g, p = square(0, 0, 40), square(5, 3, 40)  # touching the image edge: cropping must keep that contour
    d = boundary_dilation(H, W)
    bg, bp = boundary_region(g, d), boundary_region(p, d)
    full = (bg & bp).sum() / (bg | bp).sum()
    assert boundary_iou(g, p) == pytest.approx(full)


def test_matching_is_greedy_by_score_within_category():
    g1, g2 = square(10, 10, 20), square(60, 60, 20)
    good, poor = square(12, 10, 20), square(15, 10, 20)  # IoU with g1: 360/440 and 300/500
    far = square(40, 40, 10)
    m = match_image([g1, g2], [1, 1], [poor, good, far], [1, 1, 1], [0.9, 0.8, 0.95])
    assert set(m) == {0}  # one prediction claims g1, the far one matches nothing, g2 is missed
    assert m[0]["mask_iou"] == pytest.approx(300 / 500)  # the higher score wins, not the better IoU
    assert np.isnan(m[0]["soft_dice"])
    assert match_image([g1], [2], [good], [1], [0.9]) == {}  # other category: no match
    below = square(25, 10, 20)  # IoU 100/700 < 0.5
    assert match_image([g1], [1], [below], [1], [0.9]) == {}
    m = match_image([g1], [1], [good], [1], [0.9], pred_probs=[0.5 * good])
    assert m[0]["soft_dice"] == pytest.approx(soft_dice(0.5 * good, g1))
