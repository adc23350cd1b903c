import numpy as np
import pytest

from unet.losses import BceDiceLoss, DiceLoss, get_loss
from unet.metrics import PixelMetric, confusion, pixel_scores, scores


def _masks():
    truth = np.zeros((8, 8), bool)
    truth[2:6, 2:6] = True  # 16 damaged pixels
    pred = np.zeros((8, 8), bool)
    pred[4:8, 4:8] = True  # 16 predicted, 4 of them right
    return pred, truth


def test_numpy_scores_on_hand_made_masks():
    pred, truth = _masks()
    c = confusion(pred, truth)
    assert (c.tp, c.fp, c.fn, c.tn) == (4, 12, 12, 36)
    s = pixel_scores(pred, truth)
    assert s["iou"] == pytest.approx(4 / 28)
    assert s["dice"] == pytest.approx(8 / 32)
    assert s["precision"] == pytest.approx(4 / 16)
    assert s["recall"] == pytest.approx(4 / 16)


def test_probabilities_are_thresholded_inclusively():
    prob = np.array([[0.2, 0.7], [0.69, 0.9]], np.float32)
    truth = np.array([[0, 1], [1, 1]], bool)
    c = confusion(prob, truth, threshold=0.7)
    assert (c.tp, c.fp, c.fn) == (2, 0, 1)


def test_empty_cases_are_defined():
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    assert pixel_scores(empty, empty) == {"iou": 1.0, "dice": 1.0, "precision": 1.0, "recall": 1.0}
    missed = pixel_scores(empty, full)
    assert missed["iou"] == 0 and missed["dice"] == 0 and missed["recall"] == 0 and missed["precision"] == 1.0
    false_alarm = pixel_scores(full, empty)
    assert false_alarm["iou"] == 0 and false_alarm["precision"] == 0 and false_alarm["recall"] == 1.0
    assert scores(0, 0, 0)["dice"] == 1.0


@pytest.mark.parametrize("kind", ["iou", "dice", "precision", "recall"])
def test_keras_metric_matches_numpy_over_several_batches(kind):
    rng = np.random.default_rng(0)
    truth = rng.random((3, 2, 16, 16, 1)) > 0.8
    prob = np.clip(truth * 0.6 + rng.random(truth.shape) * 0.5, 0, 1).astype("float32")
    m = PixelMetric(kind, threshold=0.5)
    for t, p in zip(truth, prob):
        m.update_state(t.astype("float32"), p)
    expected = pixel_scores(prob, truth, 0.5)[kind]
    assert float(m.result()) == pytest.approx(expected, rel=1e-5)
    m.reset_state()
    assert float(m.result()) == 1.0  # nothing seen: the empty case


def test_dice_loss_values():
    y = np.zeros((1, 4, 4, 1), "float32")
    y[0, :2] = 1
    assert float(np.mean(DiceLoss(smooth=0)(y, y))) == pytest.approx(0.0, abs=1e-6)
    assert float(np.mean(DiceLoss(smooth=0)(y, 1 - y))) == pytest.approx(1.0, abs=1e-6)
    half = np.full_like(y, 0.5)
    # dice = 2*4 / (8 + 8) = 0.5
    assert float(np.mean(DiceLoss(smooth=0)(y, half))) == pytest.approx(0.5, abs=1e-6)


def test_bce_dice_is_the_sum_of_its_parts():
    import keras

    rng = np.random.default_rng(0)
    y = (rng.random((2, 8, 8, 1)) > 0.7).astype("float32")
    p = rng.uniform(0.05, 0.95, y.shape).astype("float32")
    bce = float(keras.losses.BinaryCrossentropy()(y, p))
    dice = float(np.mean(DiceLoss()(y, p)))
    assert float(BceDiceLoss()(y, p)) == pytest.approx(bce + dice, rel=1e-4)


def test_unknown_loss_is_named():
    with pytest.raises(ValueError, match="focal"):
        get_loss("focal")


@pytest.mark.parametrize("name", ["bce_tversky", "edge_tversky", "balanced_tversky", "focal_tversky"])
def test_tversky_losses_cost_a_missed_crack_edge_more_than_a_false_one(name):
    import keras

    truth = np.zeros((2, 16, 16, 1), np.float32)
    truth[:, 4:8] = 1  # a band four pixels wide
    good = truth * 0.98 + 0.01
    thin = good.copy()
    thin[:, 7] = 0.01  # one row of the crack missed
    wide = good.copy()
    wide[:, 8] = 0.99  # one row too many
    loss = get_loss(name)
    exact, missed, extra = (float(loss(truth, p)) for p in (good, thin, wide))
    assert exact < extra < missed
    dice = get_loss("bce_dice")  # Dice weighs both the same: the Tversky losses lean to recall
    assert (missed - extra) / exact > (float(dice(truth, thin)) - float(dice(truth, wide))) / float(dice(truth, good))
    again = keras.losses.deserialize(keras.losses.serialize(loss))  # a checkpoint names it: it must load back
    assert float(again(truth, thin)) == pytest.approx(missed)


def test_edge_band_is_the_mask_grown_minus_the_mask_shrunk():
    from unet.losses import edge_band

    y = np.zeros((1, 12, 12, 1), np.float32)
    y[0, 3:9, 3:9] = 1  # a 6x6 square
    band = np.asarray(edge_band(y, 1))[0, ..., 0]
    expect = np.zeros((12, 12), np.float32)
    expect[2:10, 2:10] = 1  # grown by one
    expect[4:8, 4:8] = 0  # minus shrunk by one
    np.testing.assert_array_equal(band, expect)
    assert not np.asarray(edge_band(np.zeros_like(y), 2)).any()  # no crack, no edge


def test_edge_tversky_costs_an_error_at_a_crack_edge_more_than_the_same_error_away_from_it():
    truth = np.zeros((1, 32, 32, 1), np.float32)
    truth[:, 10:13] = 1  # a crack three pixels wide
    good = truth * 0.98 + 0.01
    near, far = good.copy(), good.copy()
    near[:, 13, :4] = 0.9  # four false pixels touching the crack
    far[:, 28, :4] = 0.9  # the same four, far from it
    plain, edge = get_loss("bce_tversky"), get_loss("edge_tversky")
    assert float(plain(truth, near)) == pytest.approx(float(plain(truth, far)), rel=1e-5)  # plain BCE: the same
    assert float(edge(truth, near)) > float(edge(truth, far)) > float(edge(truth, good))
    # the crack's own edge pixels missed cost more than under plain BCE, relative to a perfect map
    thin = good.copy()
    thin[:, 12] = 0.01
    assert (float(edge(truth, thin)) - float(edge(truth, good))) > (float(plain(truth, thin)) - float(plain(truth, good)))


def test_balanced_tversky_gives_the_damaged_pixels_the_intact_pixels_weight():
    truth = np.zeros((2, 20, 20, 1), np.float32)
    truth[0, 5:7] = 1  # 40 damaged pixels of 800: a ratio of 19
    loss = get_loss("balanced_tversky")
    w = np.asarray(loss.pixel_weights(truth))
    assert w[truth == 1].sum() == pytest.approx(w[truth == 0].sum())  # each class weighs the same in total
    assert w[truth == 0].min() == pytest.approx(1.0) and w[truth == 1].min() == pytest.approx(19.0)
    assert np.allclose(np.asarray(loss.pixel_weights(np.zeros_like(truth))), 1.0)  # no damage: plain BCE
    rare = np.zeros_like(truth)
    rare[0, 0, 0] = 1  # 1 of 800: capped at 50
    assert np.asarray(loss.pixel_weights(rare)).max() == pytest.approx(50.0)
    # missing four damaged pixels now costs far more than four false alarms; plain BCE + Tversky much less so
    good = truth * 0.98 + 0.01
    missed, extra = good.copy(), good.copy()
    missed[0, 6, :4] = 0.01
    extra[0, 12, :4] = 0.99
    plain = get_loss("bce_tversky")
    gap = lambda f: (float(f(truth, missed)) - float(f(truth, good))) / (float(f(truth, extra)) - float(f(truth, good)))
    assert gap(loss) > 2 * gap(plain) > 2


def test_deep_supervision_loss_scores_the_main_map_and_the_side_maps_against_one_mask():
    import keras

    from unet.losses import DeepSupervisionLoss

    rng = np.random.default_rng(3)
    y = (rng.random((2, 8, 8, 1)) > 0.7).astype("float32")
    main = rng.uniform(0.05, 0.95, y.shape).astype("float32")
    base = float(get_loss("bce_tversky")(y, main))
    loss = get_loss("bce_tversky", deep_supervision=True)
    assert float(loss(y, main)) == pytest.approx(base, rel=1e-5)  # one map: the loss itself
    # three side maps like the main one: the main map's loss and half of it again
    same = np.concatenate([main] * 4, axis=-1)
    assert float(loss(y, same)) == pytest.approx(1.5 * base, rel=1e-5)
    # a side map that finds the crack lowers the loss; the main map still counts twice as much
    better = same.copy()
    better[..., 1] = y[..., 0] * 0.98 + 0.01
    assert float(loss(y, better)) < float(loss(y, same))
    worse_main = same.copy()
    worse_main[..., 0] = 1 - y[..., 0]
    worse_side = same.copy()
    worse_side[..., 1] = 1 - y[..., 0]
    assert float(loss(y, worse_main)) > float(loss(y, worse_side)) > float(loss(y, same))
    # checkpoints save it and load it back
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, DeepSupervisionLoss) and float(again(y, better)) == pytest.approx(float(loss(y, better)))
    with pytest.raises(ValueError, match="focal"):
        get_loss("focal", deep_supervision=True)


def test_pixel_metrics_read_the_main_map_of_stacked_maps():
    truth = np.zeros((1, 8, 8, 1), "float32")
    truth[0, 2:4] = 1
    stacked = np.concatenate([truth, 1 - truth], axis=-1)  # main map right, side map all wrong
    m = PixelMetric("dice")
    m.update_state(truth, stacked)
    assert float(m.result()) == 1.0


def test_f1_interval_holds_the_split_f1_and_widens_when_one_wall_holds_the_cracks():
    from unet.metrics import f1_interval

    same = np.tile([[80, 20, 20]], (10, 1))  # ten walls alike: every resample scores the same
    lo, hi = f1_interval(same)
    assert lo == pytest.approx(0.8) and hi == pytest.approx(0.8)
    # The same totals, but one wall holds most of the cracks and is scored worse than the rest.
    walls = np.array([[300, 200, 200]] + [[100, 0, 0]] * 5 + [[0, 0, 0]] * 4)
    whole = 2 * 800 / (2 * 800 + 200 + 200)
    lo, hi = f1_interval(walls)
    assert lo < whole < hi and hi - lo > 0.05
    assert f1_interval(walls) == (lo, hi)  # the same resamples every time


def test_f1_difference_is_paired_by_group():
    from unet.metrics import f1_difference

    a = np.array([[90, 10, 10], [40, 5, 30], [70, 20, 5], [20, 1, 25], [60, 10, 10]])
    same = f1_difference(a, a)
    assert same == {"difference": 0.0, "low": 0.0, "high": 0.0, "ahead": 0.0, "verdict": "cannot tell apart"}
    # b raises twice the false alarms of a on every wall: a is ahead in every resample, however
    # different the walls are from each other (which an unpaired comparison would mix in).
    d = f1_difference(a, a * [1, 2, 1])
    assert d["difference"] > 0 and d["low"] > 0 and d["ahead"] == 1.0 and d["verdict"] == "ahead"
    with pytest.raises(ValueError, match="same groups"):
        f1_difference(a, a[:3])
