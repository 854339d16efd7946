"""Dead letters keep at most MAX_DEAD_LETTER_PAYLOAD bytes of a payload, with its length and SHA-256
(issue 13: large dead letters slowed consumption)."""

from __future__ import annotations

import base64
import hashlib
import json

from banditloop.pipeline.dead_letters import MAX_DEAD_LETTER_PAYLOAD, DeadLetterFile, dead_letter_record
from banditloop.pipeline.producer import decode_dead_letter, encode_dead_letter


def test_a_large_payload_is_cut_with_its_length_and_digest(tmp_path):
    payload = ("é" * MAX_DEAD_LETTER_PAYLOAD).encode()  # 2 bytes a character: the cut falls inside one
    record = dead_letter_record(payload, "not JSON: x", "log:3")
    assert record["payload"] == "é" * (MAX_DEAD_LETTER_PAYLOAD // 2)  # text up to the cut, not base64
    assert record["payload_truncated"] is True and record["payload_bytes"] == len(payload)
    assert record["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    odd = b"a" + payload  # the cut falls in the middle of a character
    assert len(dead_letter_record(odd, "r", "s")["payload"].encode()) == MAX_DEAD_LETTER_PAYLOAD - 1
    small = dead_letter_record(b'{"broken', "not JSON", "log:1")
    assert small == {"reason": "not JSON", "source": "log:1", "payload": '{"broken'}  # unchanged
    binary = dead_letter_record(b"\xff" * (2 * MAX_DEAD_LETTER_PAYLOAD), "r", "s")
    assert base64.b64decode(binary["payload_base64"]) == b"\xff" * MAX_DEAD_LETTER_PAYLOAD


def test_records_stay_bounded_in_files_and_topics_whatever_the_payload(tmp_path):
    worst = b'"\\\x01' * (1024 * 1024)  # every byte escaped, a control character as \\u0001
    topic = encode_dead_letter(worst, "not JSON", "impressions/0/7")
    assert len(topic) < 7 * MAX_DEAD_LETTER_PAYLOAD < 1_000_000  # Kafka's default message limit
    back = decode_dead_letter(topic)
    assert back["raw"] == worst[:MAX_DEAD_LETTER_PAYLOAD] and back["payload_bytes"] == len(worst)
    dead = DeadLetterFile(tmp_path / "dead.jsonl")
    dead.raw(worst, "not JSON: x", "log:1")
    dead.close()
    (line,) = (tmp_path / "dead.jsonl").read_text().splitlines()
    assert len(line) < 7 * MAX_DEAD_LETTER_PAYLOAD
    assert json.loads(line)["payload_sha256"] == hashlib.sha256(worst).hexdigest()
