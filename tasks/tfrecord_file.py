"""Writes and reads TFRecord files of tf.train.Example records with bytes features, without TensorFlow."""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import google_crc32c

# A TFRecord file is records one after another, each framed as TensorFlow's tf.io.TFRecordWriter frames it:
#   uint64 length (little-endian) | uint32 masked CRC32C of those 8 bytes | data | uint32 masked CRC32C of the data
RECORD_OVERHEAD = 16  # the framing's bytes per record: its length and two checksums
_LENGTH = struct.Struct("<Q")
_CHECKSUM = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8
_BUFFER_BYTES = 2**20

# The protobuf wire format of the messages an Example of bytes features is made of (tensorflow/core/example/
# example.proto, feature.proto); every field used here is field 1 or 2 of wire type 2 (length-delimited):
#   Example   { Features features = 1; }
#   Features  { map<string, Feature> feature = 1; }   each entry a message { string key = 1; Feature value = 2; }
#   Feature   { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
#   BytesList { repeated bytes value = 1; }
_FIELD_1 = b"\x0a"  # (1 << 3) | 2
_FIELD_2 = b"\x12"  # (2 << 3) | 2
_KINDS = {1: "bytes_list", 2: "float_list", 3: "int64_list"}


def masked_crc(data: bytes) -> int:
    """The CRC32C of `data`, masked as TFRecord stores it (rotated right by 15 bits, plus a constant)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> list[bytes]:
    return [tag, _varint(len(payload)), payload]


def encode_example(features: Mapping[str, bytes]) -> bytes:
    """A serialized tf.train.Example whose features each hold one bytes value, keys in sorted order (for non-empty
    keys, the bytes tf.train.Example(...).SerializeToString(deterministic=True) gives)."""
    entries: list[bytes] = []
    for key in sorted(features):
        bytes_list = b"".join(_field(_FIELD_1, features[key]))
        feature = b"".join(_field(_FIELD_1, bytes_list))
        entry = b"".join(_field(_FIELD_1, key.encode("utf-8")) + _field(_FIELD_2, feature))
        entries += _field(_FIELD_1, entry)
    return b"".join(_field(_FIELD_1, b"".join(entries)))


def _fields(data: memoryview) -> Iterator[tuple[int, memoryview]]:
    """(field number, payload) of each length-delimited field of one message; fields of other wire types are
    skipped, as a protobuf parser skips fields it does not know."""
    position, end = 0, len(data)

    def varint() -> int:
        nonlocal position
        value, shift = 0, 0
        while True:
            if position >= end or shift > 63:
                raise ValueError("a varint runs past the end of its message")
            byte = data[position]
            position += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    while position < end:
        key = varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == 2:
            length = varint()
            if position + length > end:
                raise ValueError(f"field {number} runs past the end of its message")
            yield number, data[position:position + length]
            position += length
        elif wire_type == 0:
            varint()
        elif wire_type in (1, 5):
            position += 8 if wire_type == 1 else 4
            if position > end:
                raise ValueError(f"field {number} runs past the end of its message")
        else:
            raise ValueError(f"field {number} has wire type {wire_type}, which no Example holds")


def decode_example(record: bytes) -> dict[str, list[memoryview]]:
    """The bytes features of a serialized tf.train.Example: each feature's values as views into `record`.

    Raises ValueError for bytes that are not an Example, or a feature of floats or integers (not read here).
    """
    found: dict[str, list[memoryview]] = {}
    for number, features in _fields(memoryview(record)):
        if number != 1:
            continue
        for entry_number, entry in _fields(features):
            if entry_number != 1:
                continue
            key, values = "", []
            for part_number, part in _fields(entry):
                if part_number == 1:
                    key = part.tobytes().decode("utf-8")
                elif part_number == 2:
                    values = []
                    for kind, payload in _fields(part):
                        if kind != 1:
                            raise ValueError(f"feature {key!r} is a {_KINDS.get(kind, kind)}; only bytes features "
                                             "are read here")
                        values = [value for value_number, value in _fields(payload) if value_number == 1]
            found[key] = values  # a key given again replaces the earlier entry, as in a protobuf map
    return found


def frame(record: bytes) -> list[bytes]:
    """The pieces of one framed record, to be written in order."""
    length = _LENGTH.pack(len(record))
    return [length, _CHECKSUM.pack(masked_crc(length)), record, _CHECKSUM.pack(masked_crc(record))]


class Writer:
    """Appends records to a new TFRecord file (what tf.io.TFRecordWriter writes, uncompressed): write(), close()."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO = open(path, "wb", buffering=_BUFFER_BYTES)

    def write(self, record: bytes) -> None:
        self._file.writelines(frame(record))

    def close(self) -> None:
        self._file.close()


def read_records(path: Path) -> Iterator[bytes]:
    """The records of a TFRecord file, in order, each checked against its checksums.

    Raises ValueError naming the file and the byte offset of a record that is truncated or fails its checksum.
    """
    with open(path, "rb", buffering=_BUFFER_BYTES) as file:
        offset = 0
        while header := file.read(12):
            if len(header) < 12:
                raise _damaged(path, offset, f"its header is cut short ({len(header)} of 12 bytes)")
            length = header[:8]
            if masked_crc(length) != _CHECKSUM.unpack_from(header, 8)[0]:
                raise _damaged(path, offset, "its length fails its checksum")
            size = _LENGTH.unpack(length)[0]
            data = file.read(size)
            footer = file.read(4)
            if len(data) < size or len(footer) < 4:
                raise _damaged(path, offset, f"it is cut short (the file ends inside its {size} bytes)")
            if masked_crc(data) != _CHECKSUM.unpack(footer)[0]:
                raise _damaged(path, offset, "its data fails its checksum")
            yield data
            offset += RECORD_OVERHEAD + size


def _damaged(path: Path, offset: int, what: str) -> ValueError:
    return ValueError(f"{path}: the record at byte {offset} is damaged: {what}")
