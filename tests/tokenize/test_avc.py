"""`--codec avc`: vistok's own H.264 writer, checked against FFmpeg's decoder (through PyAV), bit for bit."""

import io

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import data

from vistok.errors import CodecError
from vistok.record import TokenRecord
from vistok.tokenize import AvcCodec
from vistok.tokenize.avc import tables
from vistok.tokenize.avc.codec import ELEMENTS, from_ycbcr
from vistok.tokenize.stream import StreamGrammar, plan


def ffmpeg_planes(stream: bytes) -> list[list[np.ndarray]]:
    """FFmpeg's decode of an Annex-B stream: each frame's Y, Cb, Cr planes (cropped as the stream says)."""
    out = []
    with av.open(io.BytesIO(stream), format="h264") as f:
        for fr in f.decode(video=0):
            out.append([np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in fr.planes])
    return out


def assert_ffmpeg_agrees(codec: AvcCodec, rec: TokenRecord) -> None:
    """FFmpeg decodes `to_h264` to exactly vistok's reconstruction, frame by frame, plane by plane."""
    theirs = ffmpeg_planes(codec.to_h264(rec))
    ours = codec.decoded_planes(rec)
    assert len(theirs) == len(ours) == int(rec.meta.get("frames", 1))
    for t, o in zip(theirs, ours):
        for tp, op in zip(t, o):
            assert np.array_equal(tp, op[: tp.shape[0], : tp.shape[1]])


def _pan(n=4, h=48, w=64, step=(2, 3)):
    img = data.astronaut()
    return [img[100 + step[0] * i : 100 + step[0] * i + h, 150 + step[1] * i : 150 + step[1] * i + w].copy()
            for i in range(n)]


def _tables():
    yield from (codes for t in tables.COEFF_TOKEN for codes in [[c for row in t for c in row]])
    yield [c for row in tables.COEFF_TOKEN_CHROMA_DC for c in row]
    yield from tables.TOTAL_ZEROS
    yield from tables.TOTAL_ZEROS_CHROMA_DC
    yield from tables.RUN_BEFORE


def test_every_code_table_is_prefix_free():
    for codes in _tables():
        for a in codes:
            assert not any(b != a and b.startswith(a) for b in codes), a
        assert sum(2.0 ** -len(c) for c in codes) <= 1


@pytest.mark.parametrize("qp", [0, 20, 28, 51])
def test_ffmpeg_decodes_our_intra_pictures_to_our_reconstruction(qp):
    codec = AvcCodec(qp=qp)
    for img in (data.astronaut()[100:150, 150:222].copy(), data.camera()[200:233, 100:147].copy()):
        rec = codec.encode(img)
        assert_ffmpeg_agrees(codec, rec)
        out = codec.decode(rec)
        assert out.shape == img.shape
        psnr = 10 * np.log10(255**2 / np.mean((out.astype(float) - img) ** 2))
        assert psnr > {0: 40, 20: 36, 28: 32, 51: 20}[qp]  # colour: 4:2:0 caps it (gray at QP 0: 67 dB)


def test_p_pictures_follow_the_motion_and_cost_less():
    """A pan: P pictures' vectors are the pan's shift for most macroblocks, and cost a fraction of an I picture."""
    codec = AvcCodec(qp=28, gop=4, search=8)
    frames = _pan()
    rec = codec.encode_clip(frames)
    assert_ffmpeg_agrees(codec, rec)
    pics = codec.pictures(rec)
    assert [p.kind for p in pics] == ["I", "P", "P", "P"]
    inter = [mb for p in pics[1:] for mb in p.mbs if mb.kind in ("P16", "skip")]
    assert len(inter) > 0.7 * sum(len(p.mbs) for p in pics[1:])
    moved = [mb.mv for mb in inter if mb.kind == "P16"]
    assert sum(mv == (12, 8) for mv in moved) > len(moved) / 2  # the window moves (3, 2): found that far on
    bits = [len(codec.tokens.of(mb)) for mb in pics[0].mbs], [len(codec.tokens.of(mb)) for mb in pics[1].mbs]
    assert sum(bits[1]) < 0.6 * sum(bits[0])
    intra = AvcCodec(qp=28).encode_clip(frames)
    assert len(codec.to_h264(rec)) < 0.6 * len(AvcCodec(qp=28).to_h264(intra))


def test_mode_decisions_use_the_modes():
    codec = AvcCodec(qp=24)
    pics = codec.pictures(codec.encode(data.astronaut()[:96, :96].copy()))
    i4 = [m for mb in pics[0].mbs if mb.kind == "I4" for m in mb.i4_modes]
    assert len(set(i4)) == 9  # every Intra_4x4 direction is chosen somewhere on a photo
    assert {mb.kind for mb in pics[0].mbs} == {"I4", "I16"}


def test_tokens_round_trip_through_the_syntax_and_are_deterministic():
    codec = AvcCodec(qp=30, gop=2, search=4)
    frames = _pan(3, 33, 47)  # odd sides: padded, cropped back
    rec = codec.encode_clip(frames)
    again = codec.encode_clip(frames)
    assert np.array_equal(rec.tokens, again.tokens)
    toks = [t for i, p in enumerate(codec.pictures(rec)) for t in ([0] if i else []) + [x for mb in p.mbs for x in codec.tokens.of(mb)]]
    assert np.array_equal(np.array(toks)[np.array(toks) != 0], rec.tokens[rec.tokens != 3])
    assert codec.decode(rec).shape == (3, 33, 47, 3)
    assert_ffmpeg_agrees(codec, rec)
    pos = codec.layout(rec.meta).positions(rec)
    assert pos.coords.shape == (rec.tokens.size, len(codec.axes)) and pos.coords[:, 3].max() < len(ELEMENTS)


def test_gray_images_decode_gray():
    codec = AvcCodec(qp=26)
    img = data.camera()[:40, :40].copy()
    rec = codec.encode(img)
    assert codec.decode(rec).shape == (40, 40)
    assert np.array_equal(codec.decode(rec), codec.decoded_planes(rec)[0][0][:40, :40])
    assert from_ycbcr(codec.decoded_planes(rec)[0], gray=True).shape == (48, 48)


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_any_stream_the_grammar_allows_is_a_stream_ffmpeg_decodes_to_our_reconstruction(draw):
    """Random grammar-valid streams, in a random macroblock order: every type, mode, vector and level the grammar
    offers; P pictures with gop 2. The canonical record writes a stream FFmpeg decodes exactly as vistok does."""
    qp = draw.draw(st.sampled_from([0, 12, 28, 45, 51]))
    codec = AvcCodec(qp=qp, gop=2, search=3)
    frames = draw.draw(st.sampled_from([1, 2]))
    meta = {"height": draw.draw(st.sampled_from([16, 30])), "width": draw.draw(st.sampled_from([16, 34])),
            "components": 3, **({"frames": frames} if frames > 1 else {})}
    rng = np.random.default_rng(draw.draw(st.integers(0, 2**32 - 1)))
    g = StreamGrammar(codec, meta, plan(codec, meta, "random", rng))
    eob, run = codec.tokens.eob, codec.tokens.run
    while not g.done:
        allowed = np.flatnonzero(g.allowed())
        if eob in allowed and rng.random() < 0.3:  # end blocks early now and then: full blocks are rare
            tok = eob
        elif (allowed >= run).any() and (allowed < run + 16).any() and rng.random() < 0.5:
            tok = int(rng.choice(allowed[(allowed >= run) & (allowed < run + 16)]))
        elif codec.tokens.level in allowed and rng.random() < 0.7:  # small levels most of the time
            small = allowed[np.abs([codec.tokens.level_value(int(t)) if t >= codec.tokens.level else 99 for t in allowed]) <= 3]
            tok = int(rng.choice(small if small.size else allowed))
        else:
            tok = int(rng.choice(allowed))
        g.step(tok)
    rec = TokenRecord("r", g.canonical().astype(codec.vocab.dtype), meta)
    assert_ffmpeg_agrees(codec, rec)


def test_bad_options_are_refused():
    for kw in ({"qp": 52}, {"qp": -1}, {"gop": 0}, {"search": 65}):
        with pytest.raises(CodecError, match="avc"):
            AvcCodec(**kw)
    with pytest.raises(CodecError, match="does not allow"):
        AvcCodec().pictures(TokenRecord("r", np.array([4, 4, 4], np.uint16), {"height": 16, "width": 16}))


def test_decode_writes_the_stream_itself_and_its_yuv(tmp_path):
    """`vistok decode --out x.264` writes `to_h264` (FFmpeg reads it back to our planes), `.y4m` the planes."""
    from vistok.errors import UsageError
    from vistok.shards.render import save_record
    from vistok.tokenize import JpegCodec

    codec = AvcCodec(qp=30, gop=2, search=4)
    rec = codec.encode_clip(_pan(2, 31, 40))
    save_record(codec, rec, tmp_path / "x.264")
    assert (tmp_path / "x.264").read_bytes() == codec.to_h264(rec)
    save_record(codec, rec, tmp_path / "x.y4m")
    raw = (tmp_path / "x.y4m").read_bytes()
    head, body = raw.split(b"\n", 1)
    assert head.startswith(b"YUV4MPEG2 W40 H32 ")
    frames = body.split(b"FRAME\n")[1:]
    theirs = ffmpeg_planes(codec.to_h264(rec))
    assert [f for f in frames] == [b"".join(p.tobytes() for p in t) for t in theirs]
    with pytest.raises(UsageError, match="cannot write .264"):
        save_record(JpegCodec(), JpegCodec().encode(_pan(1)[0]), tmp_path / "y.264")


def test_golden_tokens_write_the_golden_stream():
    """A committed 2-frame clip's tokens (an I and a P picture) and the stream they write. If this fails, what
    the tokens mean changed: bump FORMAT_VERSION (an encoder that decides differently changes neither file)."""
    from pathlib import Path

    golden = Path(__file__).parent / "golden"
    codec = AvcCodec(qp=30, gop=2, search=4)
    rec = TokenRecord("g", np.load(golden / "avc_clip.npy", allow_pickle=False),
                      {"height": 32, "width": 32, "components": 3, "frames": 2})
    assert codec.to_h264(rec) == (golden / "avc_clip.264").read_bytes()
    assert_ffmpeg_agrees(codec, rec)
    assert [p.kind for p in codec.pictures(rec)] == ["I", "P"]


def test_a_later_frame_alone_is_a_p_picture_scored_but_never_decoded():
    """`frames_of` gives a clip's later frame its `frame_index`: its grammar takes P types (what `eval
    --per-frame` scores as a frame alone), and decoding it says why it cannot."""
    from vistok.tokenize.base import frames_of

    codec = AvcCodec(qp=32, gop=2, search=4)
    rec = codec.encode_clip(_pan(3, 16, 32))
    first, second, third = frames_of(rec)
    assert second.meta["frame_index"] == 1 and "frame_index" not in first.meta
    for fr in (first, second, third):
        g = StreamGrammar(codec, fr.meta, plan(codec, fr.meta, "canonical", np.random.default_rng(0)))
        for t in fr.tokens.astype(np.int64):
            assert g.allowed()[t]
            g.step(int(t))
    assert codec.decode(third).shape == (16, 32, 3)  # frame 3 of gop 2: an I picture of its own
    with pytest.raises(CodecError, match="P picture"):
        codec.decode(second)


@pytest.mark.skipif(not __import__("vistok.tokenize.avc.encoder", fromlist=["NATIVE"]).NATIVE,
                    reason="the C kernel is not built (no compiler at install)")
@pytest.mark.parametrize("qp", [0, 24, 51])
def test_the_c_kernel_decides_every_macroblock_as_the_python_encoder(qp):
    """vistok/_avcc.c against the Python reference: the same syntax for every macroblock (type, modes, vectors,
    levels) and the same reconstruction, on a photo, a gray crop and noise, and a pan's P pictures."""
    from vistok.tokenize.avc.codec import to_ycbcr
    from vistok.tokenize.avc.encoder import Encoder

    rng = np.random.default_rng(qp)
    clips = [[data.astronaut()[100:164, 150:230]], [data.camera()[:48, :32]], [rng.integers(0, 256, (32, 48, 3), np.uint8)],
             _pan(3, 48, 64, (5, -4))]
    for clip in clips:
        frames = [to_ycbcr(np.ascontiguousarray(f)) for f in clip]
        (c_pics, c_sts), (p_pics, p_sts) = (Encoder(qp, search=6, native=n).encode(frames, gop=3) for n in (True, False))
        for c_pic, p_pic in zip(c_pics, p_pics):
            for a, b in zip(c_pic.mbs, p_pic.mbs):
                assert (a.kind, a.mode, a.chroma_mode, tuple(a.i4_modes), tuple(a.mv)) == (
                    b.kind, b.mode, b.chroma_mode, tuple(b.i4_modes), tuple(b.mv))
                for field in ("luma_dc", "luma", "chroma_dc", "chroma_ac"):
                    assert np.array_equal(getattr(a, field), getattr(b, field)), field
        assert all(np.array_equal(p, q) for s, t in zip(c_sts, p_sts) for p, q in zip(s.planes, t.planes))
    photo = np.ascontiguousarray(data.astronaut()[:64, :96])
    assert all(np.array_equal(a, b) for a, b in zip(to_ycbcr(photo), to_ycbcr(photo, native=False)))
    codec = AvcCodec(qp=qp, gop=3, search=6)  # and the C tokens are the Python tokens of that syntax
    rec = codec.encode_clip(clips[-1])
    pics, _ = codec.syntax(clips[-1])
    assert np.array_equal(rec.tokens, np.concatenate([
        ([3] if i else []) + [t for mb in p.mbs for t in codec.tokens.of(mb)] for i, p in enumerate(pics)]))
