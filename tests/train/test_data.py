"""Folder sources: ISBI as is, bit depths and colour, class mapping, and every bad folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.errors import UserError
from tests.conftest import write_pair
from train.config import DataConfig, Foreground
from train.data import load_samples, split_samples
from train.data.folder import load_folder


def test_isbi_loads_as_is_with_membranes_as_the_dark_foreground(isbi):
    samples = load_folder(isbi, classes=1, foreground=Foreground.DARK)
    assert [s.name for s in samples] == [str(i) for i in range(30)]  # natural order
    first = samples[0]
    assert first.image.shape == (512, 512) and first.image.dtype == np.uint8
    assert set(np.unique(first.mask)) == {0, 1}
    raw = np.array(Image.open(isbi / "label" / "0.png"))
    np.testing.assert_array_equal(first.mask, (raw == 0).astype(np.uint8))
    train, val = split_samples(samples, 0.2)
    assert [s.name for s in val] == [str(i) for i in range(24, 30)]
    assert len(train) == 24


def test_bright_foreground_takes_the_higher_value_of_any_two(tmp_path):
    write_pair(
        tmp_path, "a", np.full((8, 8), 7, np.uint8), np.where(np.eye(8), 200, 30).astype(np.uint8)
    )
    write_pair(tmp_path, "b", np.full((8, 8), 9, np.uint8), np.full((8, 8), 30, np.uint8))
    bright = load_folder(tmp_path, 1, Foreground.BRIGHT)
    dark = load_folder(tmp_path, 1, Foreground.DARK)
    np.testing.assert_array_equal(bright[0].mask, np.eye(8, dtype=np.uint8))
    np.testing.assert_array_equal(dark[0].mask, 1 - np.eye(8, dtype=np.uint8))
    assert bright[1].mask.max() == 0 and dark[1].mask.min() == 1


def test_sixteen_bit_tiff_and_rgb_images_load_with_class_index_masks(tmp_path):
    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    (tmp_path / "image").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(deep).save(tmp_path / "image" / "deep.tif")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "image" / "rgb.png")
    classes = np.arange(64, dtype=np.uint8).reshape(8, 8) % 3
    Image.fromarray(classes).save(tmp_path / "masks" / "deep.tif")
    Image.fromarray(classes[::-1]).save(tmp_path / "masks" / "rgb.png")
    samples = {s.name: s for s in load_folder(tmp_path, 3, Foreground.BRIGHT)}
    assert samples["deep"].image.dtype == np.uint16
    np.testing.assert_array_equal(samples["deep"].image, deep)
    assert samples["rgb"].image.shape == (8, 8, 3)
    np.testing.assert_array_equal(samples["deep"].mask, classes)


def _expect_error(root: Path, pattern: str, classes: int = 1) -> None:
    with pytest.raises(UserError, match=pattern) as info:
        load_folder(root, classes, Foreground.BRIGHT)
    assert "\n" not in str(info.value)


def test_missing_and_empty_folders_are_clear_errors(tmp_path):
    _expect_error(tmp_path / "nope", "does not exist")
    (tmp_path / "image").mkdir()
    _expect_error(tmp_path, "no mask folder")
    (tmp_path / "label").mkdir()
    _expect_error(tmp_path, "holds no PNG or TIFF")


def test_unpaired_files_are_named(make_folder):
    root = make_folder(3)
    (root / "label" / "1.png").unlink()
    _expect_error(root, r"without a partner.*1\.png")


def test_truncated_image_is_named(make_folder):
    root = make_folder(2)
    data = (root / "image" / "0.png").read_bytes()
    (root / "image" / "0.png").write_bytes(data[: len(data) // 2])
    _expect_error(root, r"cannot read .*0\.png")


def test_not_an_image_is_named(make_folder):
    root = make_folder(2)
    (root / "image" / "1.png").write_text("hello")
    _expect_error(root, r"cannot read .*1\.png")


def test_mask_of_another_size_is_named(make_folder):
    root = make_folder(2)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "label" / "1.png")
    _expect_error(root, r"mask .*1\.png is 16x16 but its image is 32x32")


def test_more_mask_classes_than_configured_names_the_file(make_folder):
    root = make_folder(2)
    five = (np.arange(32 * 32).reshape(32, 32) % 5).astype(np.uint8)
    Image.fromarray(five).save(root / "label" / "1.png")
    Image.fromarray(five % 2).save(root / "label" / "0.png")
    _expect_error(root, r"mask .*1\.png holds class 4 .*--classes 5", classes=3)


def test_masks_with_one_value_everywhere_are_refused(tmp_path):
    for stem in ("a", "b"):
        write_pair(tmp_path, stem, np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
    _expect_error(tmp_path, "single value 0")


def test_synthetic_source_and_split_are_deterministic():
    config = DataConfig(synthetic_count=5, synthetic_size=32)
    a, b = load_samples(config, 1, seed=3), load_samples(config, 1, seed=3)
    np.testing.assert_array_equal(a[4].image, b[4].image)
    train, val = split_samples(a, 0.2)
    assert [s.name for s in val] == ["synthetic-4"] and len(train) == 4
    with pytest.raises(UserError):
        split_samples(a[:1], 0.2)


def _soft_edged(size: int = 48) -> np.ndarray:
    """A binary 0/255 mask drawn at 64 px and resized with bilinear filtering, as exports do:
    its edges hold values in between."""
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 255
    mask[16:32, :16] = 255
    return np.array(Image.fromarray(mask).resize((size, size), Image.BILINEAR))


def test_grey_masks_with_an_opaque_alpha_are_grey_and_transparency_is_named(tmp_path):
    rng = np.random.default_rng(0)
    for stem in ("a", "b"):
        grey = np.where(rng.random((16, 16)) > 0.5, 255, 0).astype(np.uint8)
        la = np.stack([grey, np.full_like(grey, 255)], axis=-1)
        write_pair(tmp_path, stem, rng.integers(0, 256, (16, 16), dtype=np.uint8), la)
        Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 255)])).save(
            tmp_path / "label" / f"{stem}.png"
        ) if stem == "b" else None  # RGBA too
    samples = load_folder(tmp_path, 1, Foreground.BRIGHT)
    assert all(set(np.unique(s.mask)) == {0, 1} for s in samples)
    la = np.array(Image.open(tmp_path / "label" / "a.png"))
    la[0, 0, 1] = 0  # one transparent pixel
    Image.fromarray(la).save(tmp_path / "label" / "a.png")
    _expect_error(tmp_path, r"mask .*a\.png has transparent pixels \(0\.4% not fully opaque\)")


def test_anti_aliased_masks_are_named_and_binarized_by_the_threshold(tmp_path):
    rng = np.random.default_rng(1)
    for stem in ("a", "b"):
        write_pair(tmp_path, stem, rng.integers(0, 256, (48, 48), dtype=np.uint8), _soft_edged())
    assert len(np.unique(_soft_edged())) > 4  # the case is real: values in between
    _expect_error(
        tmp_path, r"look binary with soft edges: 0 and 255 hold .*--mask-threshold 127\.5"
    )
    samples = load_folder(tmp_path, 1, Foreground.BRIGHT, mask_threshold=127.5)
    expected = (_soft_edged() >= 127.5).astype(np.uint8)
    assert np.array_equal(samples[0].mask, expected)
    dark = load_folder(tmp_path, 1, Foreground.DARK, mask_threshold=127.5)
    assert np.array_equal(dark[0].mask, 1 - expected)


@pytest.mark.slow
def test_a_folder_of_anti_aliased_masks_trains_with_the_threshold(tmp_path):
    from train.cli import main, parse_args

    rng = np.random.default_rng(2)
    for i in range(4):
        write_pair(
            tmp_path / "data", str(i), rng.integers(0, 256, (48, 48), dtype=np.uint8), _soft_edged()
        )
    argv = [
        "--data",
        str(tmp_path / "data"),
        "--preset",
        "tiny",
        "--input-size",
        "32",
        "--epochs",
        "1",
    ]
    argv += ["--steps-per-epoch", "2", "--batch-size", "2", "--out", str(tmp_path / "run")]
    assert main(parse_args(argv)) == 2  # without the threshold: the one-line advice
    assert not (tmp_path / "run").exists()  # and nothing written
    assert main(parse_args([*argv, "--mask-threshold", "127.5"])) == 0
    assert (tmp_path / "run" / "model.keras").is_file()


def _stack(path: Path, pages: list[np.ndarray]) -> None:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    for i, page in enumerate(pages):
        tifffile.imwrite(path, page, append=i > 0, photometric="minisblack")


def _em_stack(count: int, size: int = 48, dtype=np.uint16) -> tuple[list, list]:
    from train.data.synthetic import generate_em

    images, masks = generate_em(count, (size, size), seed=3)
    scale = 257 if dtype == np.uint16 else 1
    return [(i.astype(dtype) * scale) for i in images], [m * 255 for m in masks]


def test_a_tiff_stack_is_one_sample_per_page(tmp_path):
    images, masks = _em_stack(3)
    _stack(tmp_path / "image" / "stack.tif", images)
    _stack(tmp_path / "label" / "stack.tif", masks)
    samples = load_folder(tmp_path, 1, Foreground.BRIGHT)
    assert [s.name for s in samples] == ["stack#0", "stack#1", "stack#2"]
    for sample, image, mask in zip(samples, images, masks, strict=True):
        assert sample.image.dtype == np.uint16 and np.array_equal(sample.image, image)
        assert np.array_equal(sample.mask, (mask > 0).astype(np.uint8))


@pytest.mark.parametrize(
    "mask_pages, message",
    [
        (lambda m: m[:2], r"image stack .*stack\.tif has 3 page\(s\) but its mask stack .* has 2"),
        (
            lambda m: [x[:40] for x in m],
            r"mask .*stack\.tif page 0 is 48x40 but its image is 48x48",
        ),
        (lambda m: [m[0], m[1].astype(np.uint16), m[2]], r"page 1 of TIFF stack .* is uint16"),
    ],
)
def test_bad_stacks_are_one_line_errors(tmp_path, mask_pages, message):
    images, masks = _em_stack(3)
    _stack(tmp_path / "image" / "stack.tif", images)
    _stack(tmp_path / "label" / "stack.tif", mask_pages(masks))
    _expect_error(tmp_path, message)


def test_a_tiff_without_pages_is_named(tmp_path):
    _stack(tmp_path / "image" / "a.tif", _em_stack(2)[0])
    (tmp_path / "label").mkdir()
    (tmp_path / "label" / "a.tif").write_bytes(b"II*\x00\x08\x00\x00\x00\x00\x00")  # no IFD
    _expect_error(tmp_path, r"a\.tif")


@pytest.mark.slow
def test_a_three_page_stack_trains(tmp_path):
    from train.cli import main, parse_args

    images, masks = _em_stack(3, size=64)
    _stack(tmp_path / "data" / "image" / "stack.tif", images)
    _stack(tmp_path / "data" / "label" / "stack.tif", masks)
    argv = ["--data", str(tmp_path / "data"), "--preset", "tiny", "--input-size", "32"]
    argv += [
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "2",
        "--val-fraction",
        "0.34",
    ]
    assert main(parse_args([*argv, "--out", str(tmp_path / "run")])) == 0
    assert (tmp_path / "run" / "model.keras").is_file()
