"""An image folder is read as the model will see it: each image scaled by its own bit depth, palette and opaque RGBA
images as their colors, grayscale kept one channel; every image that cannot be read that way is refused in one line
naming it, before anything large is decoded or resized."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from advpnml.data import DataFileError
from advpnml.data.user import MAX_IMAGE_PIXELS, image_folder


def _digit() -> np.ndarray:
    """A 28x28 8-bit 'digit': a bright bar on black, with grey edges."""
    img = np.zeros((28, 28), np.uint8)
    img[6:22, 12:16] = 255
    img[6:22, 11] = img[6:22, 16] = 100
    return img


def _folder(tmp_path, images: dict[str, Image.Image]):
    for name, img in images.items():
        path = tmp_path / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
    return tmp_path / "data"


def test_a_16_bit_png_reads_as_its_8_bit_twin(tmp_path):
    digit = _digit()
    folder = _folder(
        tmp_path,
        {
            "a/eight.png": Image.fromarray(digit),
            "b/sixteen.png": Image.fromarray(digit.astype(np.uint16) * 257),  # the same levels on 16 bits
        },
    )
    data = image_folder(folder, 28)
    assert data.x.shape == (2, 1, 28, 28) and data.y.tolist() == [0, 1]
    assert float(data.x[0].max()) == 1.0 and abs(float(data.x[1].mean()) - float(data.x[0].mean())) < 1e-6
    assert abs(float(data.x[0].mean()) - digit.mean() / 255) < 1e-6, "not every non-zero pixel at 1.0"


def test_palette_rgba_and_gray_rgb_images_read_as_their_colors(tmp_path):
    digit = _digit()
    rgba = np.dstack([digit, digit, digit, np.full_like(digit, 255)])
    folder = _folder(
        tmp_path,
        {
            "a/gray.png": Image.fromarray(digit),
            "a/palette.png": Image.fromarray(digit).convert("P"),
            "b/rgba.png": Image.fromarray(rgba),
            "b/rgb.png": Image.fromarray(np.dstack([digit] * 3)),
            "b/bits.png": Image.fromarray(digit > 127),
        },
    )
    data = image_folder(folder, 28)
    assert data.x.shape == (5, 1, 28, 28), "every image is gray: one channel"
    for i in (0, 1, 3, 4):  # a/gray, a/palette, b/rgb, b/rgba (b/bits is 2)
        assert np.allclose(data.x[i, 0].numpy(), digit / 255), i
    assert set(np.unique(data.x[2].numpy())) == {0.0, 1.0}


def test_mostly_color_folders_repeat_the_gray_channel_and_a_stray_color_image_is_named(tmp_path):
    digit = _digit()
    red = np.dstack([digit, np.zeros_like(digit), np.zeros_like(digit)])
    color = _folder(
        tmp_path / "c", {"a/r1.png": Image.fromarray(red), "a/r2.png": Image.fromarray(red), "b/g.png": Image.fromarray(digit)}
    )
    data = image_folder(color, 28)
    assert data.x.shape == (3, 3, 28, 28)
    assert np.allclose(data.x[2, 0], data.x[2, 1]) and np.allclose(data.x[2, 0].numpy(), digit / 255)
    gray = _folder(
        tmp_path / "g", {"a/g1.png": Image.fromarray(digit), "a/g2.png": Image.fromarray(digit), "b/r.png": Image.fromarray(red)}
    )
    with pytest.raises(DataFileError, match=r"^\S*b/r.png is in color while 2 of the folder's 3 images are grayscale"):
        image_folder(gray, 28)


@pytest.mark.parametrize(
    "name, image, message",
    [
        (
            "a/clear.png",
            Image.fromarray(np.zeros((28, 28, 4), np.uint8)),
            r"a/clear.png has transparent pixels \(alpha down to 0\)",
        ),
        ("a/float.tiff", Image.fromarray(np.zeros((28, 28), np.float32)), r"a/float.tiff has 'F' pixels \(32-bit or float\)"),
        ("a/thin.png", Image.fromarray(np.zeros((1, 1000), np.uint8)), r"a/thin.png is 1000 x 1 pixels: its center square"),
        ("stray.png", Image.fromarray(_digit()), r"stray.png lies at the image folder's root \(1 such\)"),
        ("a/deeper/x.png", Image.fromarray(_digit()), r"a/deeper/x.png lies in a folder inside class folder 'a'"),
    ],
    ids=["transparent", "float", "degenerate", "root", "nested"],
)
def test_an_image_that_cannot_be_read_as_the_model_sees_it_is_named(tmp_path, name, image, message):
    folder = _folder(tmp_path, {"a/ok.png": Image.fromarray(_digit()), "b/ok.png": Image.fromarray(_digit()), name: image})
    with pytest.raises(DataFileError, match=message) as err:
        image_folder(folder, 28)
    assert "\n" not in str(err.value)


def test_oversize_images_are_refused_from_their_header_before_decoding(tmp_path, monkeypatch):
    import PIL.ImageFile

    folder = _folder(tmp_path, {"a/huge.png": Image.new("L", (9000, 8000)), "b/ok.png": Image.fromarray(_digit())})
    decoded = []
    original = PIL.ImageFile.ImageFile.load
    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", lambda self: decoded.append(self) or original(self))
    with pytest.raises(DataFileError, match=rf"a/huge.png has 9000 x 8000 pixels, more than the {MAX_IMAGE_PIXELS:,}"):
        image_folder(folder, 28)
    assert not decoded, "refused from the header alone"


def test_a_decompression_bomb_is_one_line(tmp_path, monkeypatch):
    folder = _folder(tmp_path, {"a/bomb.png": Image.new("L", (300, 300)), "b/ok.png": Image.fromarray(_digit())})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's own guard, as a 20000 x 20000 PNG trips it
    with pytest.raises(DataFileError, match=r"a/bomb.png is not a readable image: Image size \(90000 pixels\) exceeds"):
        image_folder(folder, 28)


def test_a_long_thin_image_is_cropped_before_it_is_resized(tmp_path, monkeypatch):
    wide = np.zeros((100, 1500), np.uint8)
    wide[:, 740:760] = 255  # a bright band in the middle of the center square (columns 700-800)
    folder = _folder(tmp_path, {"a/wide.png": Image.fromarray(wide), "b/ok.png": Image.fromarray(_digit())})
    sizes = []
    original = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, size, *a, **k: sizes.append(size) or original(self, size, *a, **k))
    data = image_folder(folder, 28)
    assert set(sizes) == {(28, 28)}, "never resized to 420 x 28 and then cropped"
    assert float(data.x[0, 0, :, 14].mean()) == 1.0 and float(data.x[0, 0, :, 0].mean()) == 0.0
