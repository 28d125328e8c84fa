"""The image a tar format (webdataset, img2dataset) stores for a sample: one `.jpg` member per
sample whatever the pool's formats (`[export] tar_images = "jpg"`), or the original bytes.

Why one key: `datasets.load_dataset("webdataset")` infers its columns from the first samples and
decodes by member extension, so a shard mixing `KEY.jpg` and `KEY.png` comes back with one image
column and None for every row of the other format, without an error; NeMo Curator's image reader
and img2dataset-layout readers take `.jpg` only. JPEG bytes are copied unchanged; any other
format is decoded once (EXIF orientation applied, first frame of an animation, transparency
flattened onto white) and encoded as JPEG at `[export] jpeg_quality` with 4:4:4 chroma and the
source's ICC profile. The imagefolder keeps every original byte for byte (docs/export.md).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

from photogenic.pipeline.export.samples import Sample

TAR_EXT = "jpg"
# Flattening transparency onto white, as browsers show a transparent PNG on a white page.
BACKGROUND = (255, 255, 255)


class ImageError(ValueError):
    """The sample's bytes cannot be decoded for transcoding."""


@dataclass(frozen=True)
class TarImage:
    data: bytes
    ext: str  # the member extension: "jpg", or the original's with tar_images = "original"
    source_ext: str  # the original's extension (sample.ext)
    transcoded: bool  # data is a re-encoding, not the pool's bytes

    def describe(self) -> dict[str, object]:
        """What the sample's .json says about its image (under `export.image`)."""
        return {"ext": self.ext, "source_ext": self.source_ext, "transcoded": self.transcoded}


def tar_image(sample: Sample, config) -> TarImage:
    """The image to store for `sample` in a tar format under `config` (an ExportConfig)."""
    ident = (config.tar_images, config.jpeg_quality)
    image = sample.tar_images.get(ident)
    if image is None:
        if config.tar_images == "original" or sample.ext == TAR_EXT:
            image = TarImage(sample.data, sample.ext, sample.ext, False)
        else:
            image = TarImage(to_jpeg(sample.data, config.jpeg_quality, sample.key), TAR_EXT,
                             sample.ext, True)
        sample.tar_images[ident] = image
    return image


def to_jpeg(data: bytes, quality: int, key: str = "") -> bytes:
    """`data` (any format Pillow reads) as a JPEG: deterministic for the same input and Pillow."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.seek(0)
            icc = im.info.get("icc_profile")
            im = ImageOps.exif_transpose(im)  # orientation goes into the pixels: EXIF is dropped
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                flat = Image.new("RGB", rgba.size, BACKGROUND)
                flat.paste(rgba, mask=rgba.getchannel("A"))
                im = flat
            elif im.mode.startswith("I"):  # 16-bit greyscale: scale to 8 bits, not clip
                im = im.convert("I").point(lambda v: v / 256).convert("L")
            if im.mode not in ("RGB", "L", "CMYK"):
                im = im.convert("RGB")
            out = io.BytesIO()
            im.save(out, "JPEG", quality=quality, subsampling=0 if im.mode == "RGB" else -1,
                    icc_profile=icc or None)
            return out.getvalue()
    except Exception as err:  # noqa: BLE001 - any decoder failure means the same to the export
        raise ImageError(f"cannot transcode {key or 'image'} to JPEG: {err}") from None
