"""Hostile and broken inputs: `.pt` checkpoints that try to run code or lie about their sizes,
damaged safetensors files, and image folders with decompression bombs and unusual modes.

Every malicious file is built here by hand (pickle opcodes, `zipfile`, PNG chunks), so each
test exercises exactly one fault.
"""

import collections
import io
import json
import os
import pickle
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from ditjax.autoencoder import IdentityAutoencoder
from ditjax.convert.diffusers_vae import read_diffusers_vae
from ditjax.convert.torch_checkpoint import MAX_NESTING, load_torch_checkpoint
from ditjax.data import sources
from ditjax.data.extract import extract_latents
from ditjax.data.image_modes import to_rgb
from ditjax.data.sources import FolderSource

# ---------------------------------------------------------------------------------------------
# Hand-built torch checkpoints: a zip of archive/data.pkl and archive/data/<key> storages.


def op(value) -> bytes:
    """Pickle opcodes that push `value` (protocol 2, without the PROTO and STOP opcodes)."""
    return pickle.dumps(value, protocol=2)[2:-1]


def op_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def tensor_ops(key, numel, offset, size, stride, storage="FloatStorage") -> bytes:
    """Opcodes of `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False)`."""
    persistent_id = (
        b"(" + op("storage") + op_global("torch", storage) + op(key) + op("cpu") + op(numel)
    )
    args = persistent_id + b"tQ" + op(offset) + op(tuple(size)) + op(tuple(stride)) + op(False)
    return op_global("torch._utils", "_rebuild_tensor_v2") + b"(" + args + b"tR"


def state_dict_pickle(**tensors: bytes) -> bytes:
    items = b"".join(op(name) + value for name, value in tensors.items())
    return b"\x80\x02}(" + items + b"u."


def write_pt(path, data_pkl: bytes, storages=None, extra=None):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        for key, raw in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", raw)
        for name, raw in (extra or {}).items():
            archive.writestr(name, raw)
    return path


STORAGE = np.arange(6, dtype=np.float32)


def matrix_checkpoint(path, numel=6, offset=0, size=(2, 3), stride=(3, 1), storages=None):
    data = state_dict_pickle(w=tensor_ops("0", numel, offset, size, stride))
    return write_pt(path, data, {"0": STORAGE.tobytes()} if storages is None else storages)


def test_hand_built_checkpoint_is_read(tmp_path):
    """The builders above make well-formed checkpoints: every refusal below is its fault's."""
    loaded = load_torch_checkpoint(matrix_checkpoint(tmp_path / "ok.pt"))
    np.testing.assert_array_equal(loaded["w"], [[0, 1, 2], [3, 4, 5]])
    transposed = matrix_checkpoint(tmp_path / "t.pt", size=(3, 2), stride=(1, 3))
    np.testing.assert_array_equal(load_torch_checkpoint(transposed)["w"], [[0, 3], [1, 4], [2, 5]])


MARKER = "ditjax_hostile_marker"


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("os", "system"),
        ("posix", "system"),
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("builtins", "getattr"),
        ("subprocess", "Popen"),
        ("torch", "load"),
        ("collections", "Counter"),
    ],
)
def test_globals_that_could_run_code_are_refused(tmp_path, monkeypatch, module, name):
    command = f"open('{tmp_path / MARKER}', 'w')" if name in ("eval", "exec") else f"touch {MARKER}"
    data = b"\x80\x02" + op_global(module, name) + op((command,)) + b"R."
    path = write_pt(tmp_path / "evil.pt", data)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=rf"refusing to load {module}\.{name} from"):
        load_torch_checkpoint(path)
    assert not (tmp_path / MARKER).exists()


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class NestedTrick:
    """A `__reduce__` whose callable is an allowed class and whose argument runs code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (collections.OrderedDict, (RunsCode(self.marker),))


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("payload", [RunsCode, NestedTrick])
def test_reduce_tricks_are_refused_naming_the_class(tmp_path, protocol, payload):
    marker = tmp_path / MARKER
    data = pickle.dumps({"w": payload(str(marker))}, protocol=protocol)
    with pytest.raises(ValueError, match=r"refusing to load posix\.system"):
        load_torch_checkpoint(write_pt(tmp_path / "evil.pt", data))
    assert not marker.exists()


def test_unknown_storage_type_is_refused(tmp_path):
    data = state_dict_pickle(w=tensor_ops("0", 6, 0, (6,), (1,), storage="ComplexFloatStorage"))
    with pytest.raises(ValueError, match=r"unsupported tensor storage type torch\.Complex"):
        load_torch_checkpoint(write_pt(tmp_path / "x.pt", data, {"0": STORAGE.tobytes()}))


@pytest.mark.parametrize(
    ("numel", "offset", "size", "stride", "message"),
    [
        (10**12, 0, (2, 3), (3, 1), r"declares 1000000000000 float32 elements .* holds 24 bytes"),
        (6, 1, (2, 3), (3, 1), r"reaches element 6 of a storage of 6"),
        (6, 0, (3, 3), (3, 1), r"reaches element 8 of a storage of 6"),
        (6, 0, (2, 3), (4, 1), r"reaches element 6 of a storage of 6"),
        (6, 10**15, (1,), (1,), r"reaches element 1000000000000000"),
        (6, 0, (10**6, 10**6), (0, 0), r"more elements than its storage"),
        (6, 0, (2, 3), (-3, 1), r"stride must be integers >= 0"),
        (6, 0, (2, 3), (3,), r"differ in length"),
        (6, -1, (2,), (1,), r"offset must be integers >= 0"),
        (6, 0, (2, "3"), (3, 1), r"size must be integers >= 0"),
    ],
)
def test_tensors_beyond_their_storage_are_refused(tmp_path, numel, offset, size, stride, message):
    path = matrix_checkpoint(tmp_path / "x.pt", numel, offset, size, stride)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=message):
            load_torch_checkpoint(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**24, f"refusing took {peak} bytes"


def test_many_tensors_over_one_storage_are_refused(tmp_path):
    # 100 distinct tensors, each all of one 4 KiB storage: 400 KiB from a ~6 KiB file.
    tensors = {f"t{i}": tensor_ops("0", 1024, 0, (1024,), (1,)) for i in range(100)}
    storage = np.zeros(1024, np.float32).tobytes()
    path = write_pt(tmp_path / "x.pt", state_dict_pickle(**tensors), {"0": storage})
    with pytest.raises(ValueError, match="tensors hold more than 4 times the file's bytes"):
        load_torch_checkpoint(path)
    few = {f"t{i}": tensor_ops("0", 1024, 0, (1024,), (1,)) for i in range(2)}
    path = write_pt(tmp_path / "ok.pt", state_dict_pickle(**few), {"0": storage})
    assert len(load_torch_checkpoint(path)) == 2


def test_missing_storage_record_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"storage 0 \(archive/data/0\) is missing"):
        load_torch_checkpoint(matrix_checkpoint(tmp_path / "x.pt", storages={}))


def set_declared_size(path, member: str, size: int) -> None:
    """Overwrites the uncompressed size that the zip's central directory declares for
    `member` (what `zipfile` believes), leaving its data as it is."""
    raw = bytearray(path.read_bytes())
    name = member.encode()
    start = struct.unpack_from("<I", raw, raw.rindex(b"PK\x05\x06") + 16)[0]
    while True:
        start = raw.index(b"PK\x01\x02", start)
        name_length = struct.unpack_from("<H", raw, start + 28)[0]
        if raw[start + 46 : start + 46 + name_length] == name:
            struct.pack_into("<I", raw, start + 24, size)
            break
        start += 4
    path.write_bytes(bytes(raw))


def test_zip_member_declaring_more_than_the_file_is_refused(tmp_path):
    path = matrix_checkpoint(tmp_path / "x.pt", numel=2**29)
    set_declared_size(path, "archive/data/0", 2**31)
    with pytest.raises(ValueError, match=r"archive/data/0 declares 2147483648 bytes, more than"):
        load_torch_checkpoint(path)


def test_deflated_zip_bomb_member_is_refused(tmp_path):
    path = tmp_path / "bomb.pt"
    data = state_dict_pickle(w=tensor_ops("0", 2**29, 0, (1,), (1,)))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", data)
        archive.writestr("archive/data/0", STORAGE.tobytes())
    set_declared_size(path, "archive/data/0", 2**32 - 1)
    with pytest.raises(ValueError, match=r"archive/data/0 declares 4294967295 bytes"):
        load_torch_checkpoint(path)


def test_bzip2_members_are_refused(tmp_path):
    path = tmp_path / "bz.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_BZIP2) as archive:
        archive.writestr("archive/data.pkl", state_dict_pickle())
    with pytest.raises(ValueError, match="compression method 12"):
        load_torch_checkpoint(path)


def nested_lists(depth: int) -> bytes:
    """A pickle of [[[...]]] `depth` deep, by opcodes (pickle.dumps itself would recurse)."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def test_deeply_nested_pickle_is_a_clear_error_in_bounded_memory(tmp_path):
    path = write_pt(tmp_path / "deep.pt", nested_lists(100_000))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=f"nested more than {MAX_NESTING} deep"):
            load_torch_checkpoint(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**26, f"refusing took {peak} bytes"
    with pytest.raises(ValueError, match="nested more than"):
        load_torch_checkpoint(write_pt(tmp_path / "d.pt", nested_lists(MAX_NESTING + 1)))
    node, depth = load_torch_checkpoint(write_pt(tmp_path / "ok.pt", nested_lists(MAX_NESTING))), 1
    while node:
        [node] = node
        depth += 1
    assert depth == MAX_NESTING


def test_shared_structures_are_walked_once_and_cycles_refused(tmp_path):
    levels = 40  # [x, x] nested 40 deep: 2^40 paths through 40 distinct lists
    data = b"\x80\x02" + op(0)
    for i in range(levels):
        index = struct.pack("<I", i)
        # memo[i] = the level below; pop it; push [memo[i], memo[i]].
        data += b"r" + index + b"0" + b"(j" + index + b"j" + index + b"l"
    loaded = load_torch_checkpoint(write_pt(tmp_path / "dag.pt", data + b"."))
    node, depth = loaded, 0
    while isinstance(node, list):
        assert len(node) == 2 and node[0] is node[1]
        node, depth = node[0], depth + 1
    assert depth == levels and node == 0

    cycle = b"\x80\x02]r\x00\x00\x00\x00j\x00\x00\x00\x00a."  # x = []; x.append(x)
    with pytest.raises(ValueError, match="a container contains itself"):
        load_torch_checkpoint(write_pt(tmp_path / "cycle.pt", cycle))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x02]r\xff\xff\xff\x7f.", r"memo index 2147483647 at opcode 2 is invalid"),
        (b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"abc.", r"malformed checkpoint"),
        (b"\x80\x04\x8d" + (2**40).to_bytes(8, "little") + b"abc.", r"malformed checkpoint"),
        (b"\x80\x02]]", r"malformed checkpoint"),  # no STOP
        (b"\x80\x02\xff.", r"malformed checkpoint"),  # unknown opcode
        (b"\x80\x02" + op(("storage", 1, 2)) + b"Q.", r"unsupported persistent id"),
        (
            b"\x80\x02(" + op("storage") + op(7) + op("0") + op("cpu") + op(1) + b"tQ.",
            r"storage '0' has no torch storage type",
        ),
        (
            b"\x80\x02" + op_global("torch._utils", "_rebuild_tensor_v2") + op(("x",)) + b"R.",
            r"malformed checkpoint \(TypeError",
        ),
        (
            b"\x80\x02"
            + op_global("torch._utils", "_rebuild_tensor_v2")
            + op(([1, 2], 0, (2,), (1,)))
            + b"R.",
            r"tensor data must be a storage, got list",
        ),
    ],
)
def test_malformed_pickles_are_clear_errors(tmp_path, data, message):
    with pytest.raises(ValueError, match=message):
        load_torch_checkpoint(write_pt(tmp_path / "bad.pt", data))


def test_non_zip_legacy_and_truncated_files_are_named(tmp_path):
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + b"rest of the file")
    with pytest.raises(ValueError, match=r"legacy \(torch < 1\.6\) checkpoint"):
        load_torch_checkpoint(legacy)

    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_torch_checkpoint(text)

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_torch_checkpoint(empty)

    whole = matrix_checkpoint(tmp_path / "whole.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="damaged or truncated zip archive"):
        load_torch_checkpoint(truncated)

    corrupt = bytearray(whole)
    at = corrupt.index(STORAGE.tobytes())
    corrupt[at : at + 4] = b"\xff\xff\xff\xff"
    (tmp_path / "corrupt.pt").write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match=r"malformed checkpoint \(BadZipFile: Bad CRC-32"):
        load_torch_checkpoint(tmp_path / "corrupt.pt")

    two = write_pt(tmp_path / "two.pt", state_dict_pickle(), extra={"b/data.pkl": b"."})
    with pytest.raises(ValueError, match=r"expected one data\.pkl"):
        load_torch_checkpoint(two)


# ---------------------------------------------------------------------------------------------
# safetensors files (diffusers VAE weights).


def safetensors_file(path, header: dict, data: bytes, header_size: int | None = None):
    encoded = json.dumps(header).encode()
    size = len(encoded) if header_size is None else header_size
    path.write_bytes(struct.pack("<Q", size) + encoded + data)
    return path


WEIGHT = {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}


def test_well_formed_safetensors_is_read(tmp_path):
    path = safetensors_file(tmp_path / "model.safetensors", WEIGHT, STORAGE.tobytes())
    state_dict, config = read_diffusers_vae(path)
    np.testing.assert_array_equal(state_dict["w"], STORAGE.reshape(2, 3))
    assert config is None


@pytest.mark.parametrize(
    ("header", "data", "header_size", "message"),
    [
        (
            WEIGHT,
            STORAGE.tobytes()[:10],
            None,
            r"declares data up to byte 24 but the file holds 10",
        ),
        (WEIGHT, b"", 2**60, r"header declares 1152921504606846976 bytes"),
        (WEIGHT, STORAGE.tobytes(), 1000, r"header declares 1000 bytes"),
        (
            {"w": {**WEIGHT["w"], "data_offsets": [0, 10**12]}},
            STORAGE.tobytes(),
            None,
            r"declares data up to byte 1000000000000",
        ),
        ({"w": {**WEIGHT["w"], "data_offsets": [24, 0]}}, b"", None, r"invalid data_offsets"),
        ({"w": {**WEIGHT["w"], "dtype": "Q99"}}, STORAGE.tobytes(), None, r"invalid safetensors"),
        ({"w": {**WEIGHT["w"], "shape": [7]}}, STORAGE.tobytes(), None, r"invalid safetensors"),
        (["w"], b"", None, r"header is not a JSON object"),
    ],
)
def test_broken_safetensors_are_clear_errors(tmp_path, header, data, header_size, message):
    path = safetensors_file(tmp_path / "model.safetensors", header, data, header_size)
    with pytest.raises(ValueError, match=message):
        read_diffusers_vae(path)


def test_truncated_and_non_json_safetensors_are_clear_errors(tmp_path):
    whole = safetensors_file(tmp_path / "model.safetensors", WEIGHT, STORAGE.tobytes())
    raw = whole.read_bytes()
    for cut, message in [(4, "no header"), (20, "header declares"), (len(raw) - 1, "holds 23")]:
        whole.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match=message):
            read_diffusers_vae(whole)
    whole.write_bytes(struct.pack("<Q", 4) + b"\xff{[x")
    with pytest.raises(ValueError, match="header is not valid JSON"):
        read_diffusers_vae(whole)


# ---------------------------------------------------------------------------------------------
# Images: every mode to RGB, and decompression bombs skipped with their reason.


def round_trip(image: Image.Image, fmt: str) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    buffer.seek(0)
    decoded = Image.open(buffer)
    decoded.load()
    return decoded


def test_sixteen_bit_png_is_scaled_not_clipped():
    values = np.array([[0, 128, 129, 257, 1000], [32767, 40000, 65278, 65408, 65535]], np.uint16)
    decoded = round_trip(Image.fromarray(values), "PNG")
    assert decoded.mode == "I;16"
    rgb = np.asarray(to_rgb(decoded))
    expected = np.floor(values / 257 + 0.5).astype(np.uint8)  # round(v * 255 / 65535)
    assert rgb.shape == (2, 5, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, np.stack([expected] * 3, axis=-1))
    assert expected.tolist() == [[0, 0, 1, 1, 4], [127, 156, 254, 255, 255]]

    as_int32 = Image.fromarray(values.astype(np.int32))
    assert as_int32.mode == "I"
    np.testing.assert_array_equal(np.asarray(to_rgb(as_int32))[..., 0], expected)
    with pytest.raises(ValueError, match=r"mode I with values in \[-1, 70000\]"):
        to_rgb(Image.fromarray(np.array([[-1, 70000]], np.int32)))
    with pytest.raises(ValueError, match="unsupported image mode 'F'"):
        to_rgb(Image.fromarray(np.zeros((2, 2), np.float32)))


PALETTE = [255, 0, 0, 0, 255, 0, 0, 0, 255]


def palette_image(transparency) -> Image.Image:
    image = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), "P")
    image.putpalette(PALETTE)
    if transparency is not None:
        image.info["transparency"] = transparency
    return image


@pytest.mark.parametrize("transparency", [None, 1])
def test_palette_png_maps_through_the_palette(transparency):
    decoded = round_trip(palette_image(transparency), "PNG")
    assert decoded.mode == "P"
    rgb = np.asarray(to_rgb(decoded))
    palette = np.array(PALETTE).reshape(3, 3)
    np.testing.assert_array_equal(rgb, palette[[[0, 1], [2, 1]]])


@pytest.mark.parametrize(
    ("mode", "colour", "fmt", "expected", "tolerance"),
    [
        ("CMYK", (0, 255, 0, 0), "JPEG", (255, 0, 255), 3),  # magenta: no cyan ink
        ("CMYK", (0, 0, 0, 255), "JPEG", (0, 0, 0), 3),  # all black ink
        ("L", 100, "JPEG", (100, 100, 100), 1),
        ("RGBA", (10, 20, 30, 0), "PNG", (10, 20, 30), 0),
        ("LA", (100, 50), "PNG", (100, 100, 100), 0),
        ("RGB", (1, 2, 3), "PNG", (1, 2, 3), 0),
        ("1", 1, "PNG", (255, 255, 255), 0),
    ],
)
def test_modes_convert_to_rgb(mode, colour, fmt, expected, tolerance):
    decoded = round_trip(Image.new(mode, (8, 8), colour), fmt)
    assert decoded.mode == mode
    rgb = np.asarray(to_rgb(decoded)).astype(int)
    assert rgb.shape == (8, 8, 3)
    assert np.abs(rgb - np.array(expected)).max() <= tolerance, rgb[0, 0]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height 8-bit gray pixels and holds almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def write_mode_folder(root):
    """One 8x8 image per mode under root/x/, and two decompression bombs."""
    (root / "x").mkdir(parents=True)
    images = {
        "a_16bit.png": (Image.fromarray(np.full((8, 8), 40000, np.uint16)), (156,) * 3),
        "b_cmyk.jpg": (Image.new("CMYK", (8, 8), (0, 255, 0, 0)), (255, 0, 255)),
        "c_palette.png": (palette_image(None).resize((8, 8)), None),
        "d_palette_alpha.png": (palette_image(1).resize((8, 8)), None),
        "e_gray.jpg": (Image.new("L", (8, 8), 100), (100,) * 3),
        "f_rgba.png": (Image.new("RGBA", (8, 8), (10, 20, 30, 0)), (10, 20, 30)),
        "g_la.png": (Image.new("LA", (8, 8), (100, 50)), (100,) * 3),
    }
    expected = {}
    for name, (image, colour) in images.items():
        image.save(root / "x" / name)
        if colour is None:  # palette: the stored pixels looked up in the palette
            indices = np.asarray(Image.open(root / "x" / name))
            colour = np.array(PALETTE).reshape(3, 3)[indices]
        expected[f"x/{name}"] = np.broadcast_to(np.array(colour), (8, 8, 3))
    (root / "x" / "h_bomb.png").write_bytes(png_header_only(100_000, 100_000))
    (root / "x" / "i_large.png").write_bytes(png_header_only(6000, 6000))
    return expected


def test_folder_extraction_converts_modes_and_skips_bombs(tmp_path, monkeypatch):
    expected = write_mode_folder(tmp_path / "images")
    monkeypatch.setattr(sources, "MAX_IMAGE_PIXELS", 6000 * 6000 - 1)
    out = tmp_path / "latents"
    summary = extract_latents(
        FolderSource(tmp_path / "images"),
        IdentityAutoencoder(),
        8,
        str(out),
        batch_size=4,
        examples_per_shard=16,
        progress=False,
    )
    assert (summary.num_examples, summary.num_skipped) == (len(expected), 2)
    reasons = dict(line.split("\t") for line in (out / "skipped.txt").read_text().splitlines())
    assert set(reasons) == {"x/h_bomb.png", "x/i_large.png"}
    assert reasons["x/h_bomb.png"].startswith("DecompressionBombError")
    assert reasons["x/i_large.png"].startswith("image is 6000x6000 = 36000000 pixels, above")

    data = tfds.builder_from_directory(str(out)).as_data_source(split="train")
    for i, (key, colour) in enumerate(expected.items()):
        pixels = (np.asarray(data[i]["mean"], np.float32) + 1) * 127.5
        tolerance = 3 if key.endswith(".jpg") else 0.5
        np.testing.assert_allclose(pixels, colour, atol=tolerance, err_msg=key)
