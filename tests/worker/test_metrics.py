"""CC, PSNR, MSSIM and ERR inside the mask, per frame and on average."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worker.metrics import METRICS, plane_at, rcr, score, ssim_window


def test_identity(truth: np.ndarray, mask: np.ndarray) -> None:
    result = score(truth, truth, mask)
    assert result["frames"] == 3
    assert result["cc"] == pytest.approx([1.0] * 3)
    assert result["err"] == [0.0] * 3
    assert result["mssim"] == pytest.approx([1.0] * 3)
    assert result["psnr"] == [math.inf] * 3
    assert result["mean"]["cc"] == pytest.approx(1.0) and result["mean"]["err"] == 0.0
    assert result["notes"] == []


def test_double_truth_gives_err_one_cc_one(truth: np.ndarray, mask: np.ndarray) -> None:
    result = score(2 * truth, truth, mask)
    assert result["err"] == pytest.approx([1.0] * 3, abs=1e-12)
    assert result["cc"] == pytest.approx([1.0] * 3)
    assert all(v < 1.0 for v in result["mssim"])


def test_sign_flip_gives_cc_minus_one(truth: np.ndarray, mask: np.ndarray) -> None:
    result = score(-truth, truth, mask)
    assert result["cc"] == pytest.approx([-1.0] * 3)
    assert result["err"] == pytest.approx([2.0] * 3)


def test_constant_offset_psnr(truth: np.ndarray, mask: np.ndarray) -> None:
    offset = 0.1
    result = score(truth + offset, truth, mask)
    inside = truth[:, mask].astype(np.float64)
    rng = inside.max() - inside.min()
    assert result["data_range"] == pytest.approx(rng)
    expected = 10 * math.log10(rng**2 / offset**2)
    assert result["psnr"] == pytest.approx([expected] * 3, rel=1e-5)
    assert result["mean"]["psnr"] == pytest.approx(expected, rel=1e-5)
    assert result["cc"] == pytest.approx([1.0] * 3)


def test_data_range_is_shared_across_frames(truth: np.ndarray, mask: np.ndarray) -> None:
    """A frame scored alone gets its own range; within a sequence it gets the sequence's."""
    alone = score(truth[0] + 0.1, truth[0], mask)
    together = score(truth + 0.1, truth, mask)
    assert alone["data_range"] < together["data_range"]
    assert together["psnr"][0] > alone["psnr"][0]


def test_values_outside_mask_are_ignored(truth: np.ndarray, mask: np.ndarray) -> None:
    noisy = truth + 0.05 * np.random.default_rng(1).standard_normal(truth.shape)
    polluted = noisy.copy()
    polluted[:, ~mask] = 100.0
    clean, dirty = score(noisy, truth, mask), score(polluted, truth, mask)
    for metric in METRICS:
        assert dirty[metric] == pytest.approx(clean[metric])
    assert 0 < clean["mean"]["mssim"] < 1
    assert 0 < clean["mean"]["cc"] < 1


@pytest.mark.parametrize("shape, window", [((16, 32, 32), 7), ((8, 12, 10), 7),
                                           ((6, 32, 32), 5), ((4, 9, 9), 3), ((3, 5, 5), 3),
                                           ((2, 32, 32), None)])
def test_ssim_window(shape: tuple[int, int, int], window: int | None) -> None:
    assert ssim_window(shape) == window


def test_small_grid_uses_smaller_window() -> None:
    mask = np.ones((5, 6, 6), dtype=bool)
    truth = np.random.default_rng(2).standard_normal((2, 5, 6, 6))
    result = score(truth, truth, mask)
    assert result["window"] == 5
    assert result["mssim"] == pytest.approx([1.0, 1.0])


def test_too_thin_grid_has_no_mssim() -> None:
    mask = np.ones((2, 6, 6), dtype=bool)
    truth = np.random.default_rng(2).standard_normal((1, 2, 6, 6))
    result = score(truth, truth, mask)
    assert result["window"] is None and math.isnan(result["mssim"][0])
    assert result["cc"][0] == pytest.approx(1.0)
    assert any("SSIM" in note for note in result["notes"])


def test_all_zero_truth_frame(truth: np.ndarray, mask: np.ndarray) -> None:
    truth = truth.copy()
    truth[0] = 0.0
    recon = truth + 0.01
    result = score(recon, truth, mask)
    assert math.isnan(result["cc"][0]) and math.isnan(result["err"][0])
    assert math.isfinite(result["psnr"][0]) and math.isfinite(result["mssim"][0])
    assert result["mean"]["err"] == pytest.approx(np.mean(result["err"][1:]))
    assert any("frame(s) 0" in note and "ERR" in note for note in result["notes"])
    assert any("frame(s) 0" in note and "CC" in note for note in result["notes"])


def test_constant_truth_everywhere(mask: np.ndarray) -> None:
    zero = np.zeros((2, *mask.shape))
    result = score(zero + 0.1, zero, mask)
    assert result["data_range"] == 0.0
    for metric in METRICS:
        assert all(math.isnan(v) for v in result[metric])
        assert math.isnan(result["mean"][metric])
    assert any("constant" in note for note in result["notes"])


def test_single_frame_accepted(truth: np.ndarray, mask: np.ndarray) -> None:
    result = score(truth[1], truth[1], mask)
    assert result["frames"] == 1 and result["cc"] == pytest.approx([1.0])


@pytest.mark.parametrize("volumes_shape, mask_shape", [((3, 8, 12, 9), (8, 12, 10)),
                                                       ((2, 8, 12, 10), (8, 12, 10)),
                                                       ((3, 8, 12, 10), (8, 12, 9))])
def test_shape_mismatch(truth: np.ndarray, volumes_shape: tuple[int, ...],
                        mask_shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        score(np.zeros(volumes_shape), truth, np.ones(mask_shape, dtype=bool))


def test_empty_mask(truth: np.ndarray) -> None:
    with pytest.raises(ValueError, match="mask"):
        score(truth, truth, np.zeros(truth.shape[1:], dtype=bool))


def test_plane_at_interpolates_between_plane_centres() -> None:
    volume = np.arange(4.0)[:, None, None] * np.ones((4, 2, 2))
    np.testing.assert_allclose(plane_at(volume, 0.5), 1.5)  # between planes 1 and 2
    np.testing.assert_allclose(plane_at(volume, 0.125), 0.0)  # the first centre
    np.testing.assert_allclose(plane_at(volume, 1.0), 3.0)  # clipped at the last centre


def test_rcr_of_a_known_picture() -> None:
    mask = np.ones((20, 20), dtype=bool)
    inclusions = np.zeros((2, 20, 20), dtype=bool)
    inclusions[0, 2:6, 2:6] = True  # 16 pixels, less conductive
    inclusions[1, 12:16, 12:16] = True  # 16 pixels, more conductive
    picture = np.zeros((20, 20))
    picture[2:6, 2:6] = -1.0  # exact
    picture[11:17, 11:17] = 0.4  # 36 pixels above half of its peak
    picture[13, 13] = 0.7
    ratios = rcr(picture, inclusions, np.array([16.0, 16.0]), np.array([-1, 1]), mask, 400.0)
    np.testing.assert_allclose(ratios, [1.0, 36 / 16])
    wrong_sign = rcr(-np.abs(picture), inclusions, np.array([16.0, 16.0]), np.array([-1, 1]),
                     mask, 400.0)
    assert wrong_sign[1] == 0.0
