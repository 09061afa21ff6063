"""Writing decoded records to image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vistok.errors import UsageError
from vistok.record import TokenRecord
from vistok.tokenize.base import H264_FILE, JPEG_FILE, Codec
from vistok.tokenize.orders import as_order
from vistok.tokenize.region import Region
from vistok.tokenize.stream import StreamSpec, order_record


def save_record(codec: Codec, record: TokenRecord, path: str | Path, fps: float = 10.0) -> list[Path]:
    """Write a record as an image file; a clip as numbered PNG frames or an mp4 (H.264, crf 18)."""
    from PIL import Image

    path = Path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".264", ".h264", ".y4m"):
        if H264_FILE not in codec.capabilities:
            raise UsageError(f"codec {codec.codec_id} cannot write {suffix}; use .png")
        if suffix == ".y4m":
            write_y4m(codec.decoded_planes(record), int(record.meta["height"]), int(record.meta["width"]), path, fps)
        else:
            path.write_bytes(codec.to_h264(record))
        return [path]
    if int(record.meta.get("frames", 1)) > 1:
        frames = np.asarray(codec.decode(record))
        if suffix == ".mp4":
            write_mp4(frames, path, fps)
            return [path]
        if suffix != ".png":
            raise UsageError(f"a clip decodes to .png frames or an .mp4, not {path.name}")
        out = []
        for i, fr in enumerate(frames):
            out.append(path.with_name(f"{path.stem}-{i:03d}.png"))
            Image.fromarray(fr).save(out[-1], format="PNG")
        return out
    if suffix == ".mp4":
        write_mp4(np.asarray(codec.decode(record))[None], path, fps)
        return [path]
    if suffix in (".jpg", ".jpeg"):
        if JPEG_FILE not in codec.capabilities:
            raise UsageError(f"codec {codec.codec_id} cannot write .jpg; use .png")
        path.write_bytes(codec.to_jpeg(record))
    elif suffix == ".png":
        Image.fromarray(np.asarray(codec.decode(record))).save(path, format="PNG")
    else:
        raise UsageError(f"output {path} must end in .png, .jpg, .mp4, .264 or .y4m")
    return [path]


def write_y4m(frames: list[list[np.ndarray]], height: int, width: int, path: Path, fps: float = 10.0) -> None:
    """Decoded 4:2:0 planes -> a YUV4MPEG2 file of the stream's picture (sides rounded up to even numbers, as the
    stream crops them; full-range BT.601, as the avc codec converts colour)."""
    h, w = height + height % 2, width + width % 2
    head = f"YUV4MPEG2 W{w} H{h} F{round(fps * 1000)}:1000 Ip A1:1 C420jpeg XCOLORRANGE=FULL\n".encode()
    with open(path, "wb") as f:
        f.write(head)
        for y, cb, cr in frames:
            f.write(b"FRAME\n")
            for plane, (ph, pw) in ((y, (h, w)), (cb, (h // 2, w // 2)), (cr, (h // 2, w // 2))):
                f.write(np.ascontiguousarray(plane[:ph, :pw]).tobytes())


def write_mp4(frames: np.ndarray, path: Path, fps: float = 10.0) -> None:
    """(T, H, W[, 3]) uint8 -> an H.264 mp4 (sides padded to even numbers, as yuv420p needs)."""
    from fractions import Fraction

    import av

    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=3)
    t, h, w = frames.shape[:3]
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(str(path), mode="w") as out:
        st = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        st.width, st.height, st.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        st.options = {"crf": "18"}
        for fr in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(fr), format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


def _ramp(t: float) -> tuple[int, int, int]:
    """A perceptual-ish colour ramp, dark blue -> teal -> yellow, for rank t in [0, 1]."""
    stops = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)
    x = min(max(t, 0.0), 1.0) * (len(stops) - 1)
    i = min(int(x), len(stops) - 2)
    c = stops[i] + (stops[i + 1] - stops[i]) * (x - i)
    return int(c[0]), int(c[1]), int(c[2])


def _borders(d, seg: np.ndarray, ch: int, cw: int, scale: int) -> None:
    """White lines between units of different segments (`seg`: (rows, cols)) on a canvas of ch x cw units."""
    rows, cols = seg.shape
    for y in range(rows):
        for x in range(cols):
            if x + 1 < cols and seg[y, x] != seg[y, x + 1]:
                d.line([(x + 1) * cw, y * ch, (x + 1) * cw, (y + 1) * ch], fill=(255, 255, 255, 255), width=max(1, scale))
            if y + 1 < rows and seg[y, x] != seg[y + 1, x]:
                d.line([x * cw, (y + 1) * ch, (x + 1) * cw, (y + 1) * ch], fill=(255, 255, 255, 255), width=max(1, scale))


def draw_order(codec: Codec, record: TokenRecord, order: str, seed: int = 0, min_unit_px: int = 32,
               known: Region | None = None, parallel: str = ""):
    """The decoded image with the traversal drawn over it: a path through the units' centres coloured by
    rank (first visit), each unit tinted by its rank, and segment borders (randsac, slic, frontier rings) in
    white. For `dc-first` orders, the order of what follows the DC image (which comes in raster order).
    `known`: the completion stream of that region (`sample --complete`), its units outlined in black.
    `parallel` wavefront: each unit tinted by its wave and numbered with it, waves outlined (its lanes run at
    once, so no path is drawn)."""
    from PIL import Image, ImageDraw

    img = np.asarray(codec.decode(record))
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    layout = codec.layout(record.meta)
    inp = layout.positions(record)
    spec = StreamSpec.parse(order, parallel)
    res = order_record(codec, record, spec, np.random.default_rng(seed), known=known)  # refuses what a decoder cannot follow
    seq, segments = inp.units[res.perm], res.segments if res.lanes is None else res.groups
    if as_order(order).dc_first:  # the DC image comes first, unit by unit: draw the order of the rest
        rest = ~layout.dc_cells[layout.cells.in_frame[res.cells]]
        seq, segments = seq[rest], None if segments is None else segments[rest]
    first = np.unique(seq, return_index=True)[1]
    visit = seq[np.sort(first)]  # units in order of first visit
    rows, cols = inp.grid
    uh, uw = inp.unit_pixels
    scale = max(1, int(np.ceil(min_unit_px / min(uh, uw))))
    canvas = Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale), Image.NEAREST).convert("RGB")
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(overlay)
    ch, cw = uh * scale, uw * scale
    n = max(len(visit) - 1, 1)
    rank = np.empty(rows * cols, dtype=np.int64)
    rank[visit % (rows * cols)] = np.arange(len(visit))
    for u in range(rows * cols):
        y, x = divmod(u, cols)
        d.rectangle([x * cw, y * ch, (x + 1) * cw - 1, (y + 1) * ch - 1], fill=(*_ramp(rank[u] / n), 70))
    if segments is not None:
        seg = np.empty(rows * cols, dtype=np.int64)
        seg[seq] = segments
        _borders(d, seg.reshape(rows, cols), ch, cw, scale)
    if known is not None:
        for u in np.flatnonzero(known.units(inp.grid, inp.unit_pixels, img.shape[0], img.shape[1])):
            y, x = divmod(int(u), cols)
            d.rectangle([x * cw, y * ch, (x + 1) * cw - 1, (y + 1) * ch - 1], outline=(0, 0, 0, 255), width=max(1, scale // 2))
    if res.lanes is not None:  # waves: a number on each unit, no path
        for u, w in zip(seq, segments):
            d.text(((u % cols) * cw + 2, (u // cols) * ch + 1), str(int(w)), fill=(255, 255, 255, 255))
        visit = visit[:0]
    pts = [((u % cols) * cw + cw / 2, (u // cols) * ch + ch / 2) for u in visit]
    for i in range(len(pts) - 1):
        d.line([pts[i], pts[i + 1]], fill=(*_ramp(i / n), 255), width=max(2, scale))
    if pts:
        r = max(3, scale * 2)
        d.ellipse([pts[0][0] - r, pts[0][1] - r, pts[0][0] + r, pts[0][1] + r], fill=(255, 255, 255, 255))
    return Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB")
