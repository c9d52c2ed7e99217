"""The control protocol's pure parts (crayfish.run_control): a message survives its encoding, and
parts go by the order of the claims, so that every reader of the control topic decides alike."""

from __future__ import annotations

from crayfish.run_control import FileChunks, Message, assign_parts, decode, encode


def claim(role, member):
    return Message("claim", {"role": role, "member": member})


def test_a_message_keeps_its_kind_fields_and_payload():
    m = decode(encode("file", b"\x00\x01parquet", member="m1", name="sent.parquet", index=0, count=1), offset=7)
    assert (m.kind, m["name"], m.get("index"), m.payload, m.offset) == ("file", "sent.parquet", 0, b"\x00\x01parquet", 7)


def test_the_first_claims_of_a_role_get_the_parts_in_order_and_later_ones_none():
    claims = [claim("generator", "a"), claim("collector", "x"), claim("generator", "b"), claim("generator", "a"),
              claim("generator", "c"), claim("generator", "d"), claim("reader", "r"), Message("ready", {"member": "e"})]
    parts = assign_parts(claims, {"generator": 3, "collector": 1})
    assert parts == {"a": ("generator", 0), "x": ("collector", 0), "b": ("generator", 1), "c": ("generator", 2)}


def test_a_file_comes_back_whole_from_its_chunks_in_any_order():
    chunks = FileChunks()
    for i, data in [(1, b"world"), (0, b"hello ")]:
        chunks.add(Message("file", {"member": "m", "name": "f", "index": i, "count": 2}, data))
    assert chunks.files("m", ["f"]) == {"f": b"hello world"}
