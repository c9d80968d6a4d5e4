"""The Lua scripts speak the contract: every field name and status value in them is one of the
enums of `service.contract.fields`, and the stream entries they append come from the encoders."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import redis

from service.contract.codecs import decode_frame_entry, encode_frame, encode_reference, flat
from service.contract.fields import (
    REJECTED_PREFIX,
    Counter,
    ProgressField,
    ResultField,
    SessionField,
    SessionStatus,
)
from service.contract.keys import counters_key, frames_key, session_key
from service.contract.scripts import (
    BACKLOG_FULL,
    FAILED,
    SCRIPTS,
    SEQ_TOO_FAR,
    LuaScript,
    registered,
)

HASH_FIELDS = {"session": SessionField, "counters": Counter, "progress": ProgressField}
STRING = re.compile(r"^'([^']*)'$")
PREFIX = re.compile(r"^'([^']*)'\s*\.\.")
STREAM_OPTIONS = {"MAXLEN", "~", "*"}


def _arguments(source: str) -> Iterator[list[str]]:
    """The argument lists of every `redis.call(...)`, split at the top-level commas, padded
    to a command and a key."""
    for match in re.finditer(r"redis\.call\(", source):
        depth, start, args = 0, match.end(), []
        for i in range(match.end(), len(source)):
            if source[i] in "({":
                depth += 1
            elif source[i] in ")}" and depth:
                depth -= 1
            elif source[i] == ")":
                args.append(source[start:i].strip())
                args += [""] * (2 - len(args))
                break
            elif source[i] == "," and depth == 0:
                args.append(source[start:i].strip())
                start = i + 1
        yield args


def _literal(arg: str) -> str | None:
    match = STRING.match(arg)
    return match.group(1) if match else None


def _field_names(script: LuaScript) -> Iterator[tuple[str, str, str]]:
    """(key kind, command, field-name literal) for every hash field named in the script."""
    for command, key, *rest in _arguments(script.source):
        command = _literal(command)
        index = re.fullmatch(r"KEYS\[(\d+)\]", key)
        kind = script.keys[int(index.group(1)) - 1] if index else key
        if command in ("HGET", "HEXISTS", "HINCRBY"):
            names = rest[:1]
        elif command == "HMGET":
            names = rest
        elif command == "HSET":
            names = rest[::2]
        else:
            continue
        for name in names:
            prefix = PREFIX.match(name)
            if prefix:
                yield kind, command, prefix.group(1)
            elif _literal(name) is not None:
                yield kind, command, _literal(name)


def test_every_lua_field_name_is_an_enum_value() -> None:
    seen: dict[str, set[str]] = {kind: set() for kind in HASH_FIELDS}
    for script in SCRIPTS:
        for kind, command, name in _field_names(script):
            assert kind in HASH_FIELDS, f"{script.name}: {command} on a {kind!r} key"
            allowed = {f.value for f in HASH_FIELDS[kind]}
            if kind == "counters" and name.endswith(":"):
                allowed = {REJECTED_PREFIX}
            assert name in allowed, f"{script.name}: {command} {kind} field {name!r}"
            seen[kind].add(name)
    # the scripts do use the enums (the parser would find nothing in a rewritten script)
    assert {"status", "last_seq", "expires_at"} <= seen["session"]
    assert {"accepted", "duplicate", "rejected", REJECTED_PREFIX} <= seen["counters"]
    assert {"checkpoint", "checkpoint_id"} <= seen["progress"]


def test_every_lua_status_and_result_literal_is_an_enum_value() -> None:
    for script in SCRIPTS:
        for value in re.findall(r"\bst [~=]= '([^']*)'", script.source):
            assert value in {s.value for s in SessionStatus}, f"{script.name}: {value!r}"
        for value in re.findall(r"ARGV\[\w+\] == '([^']*)'", script.source):
            assert value in {f.value for f in ResultField}, f"{script.name}: {value!r}"


def test_stream_entries_come_from_the_encoders() -> None:
    """No XADD in Lua names a field itself: the entries are passed in, encoded in Python."""
    for script in SCRIPTS:
        for command, _key, *rest in _arguments(script.source):
            if _literal(command) == "XADD":
                literals = {_literal(a) for a in rest} - {None}
                assert literals <= STREAM_OPTIONS, f"{script.name}: XADD {literals}"


@pytest.fixture
def rdb(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _open(rdb: redis.Redis, sid: str, status: SessionStatus = SessionStatus.OPEN) -> None:
    rdb.hset(session_key(sid), mapping={SessionField.STATUS.value: status.value,
                                        SessionField.LAST_SEQ.value: -1})


def _ingest(rdb: redis.Redis, sid: str, seqs: list[int], window: int = 1000,
            most: int = 1000) -> list:
    import numpy as np

    entries = [flat(encode_frame(seq, seq * 0.025, np.full(4, seq, np.float32))) for seq in seqs]
    args: list = [len(entries), len(entries[0]), window, most]
    for seq, entry in zip(seqs, entries, strict=True):
        args += [str(seq), *entry]
    return registered(rdb).ingest(keys=[session_key(sid), counters_key(sid), frames_key(sid)],
                                  args=args)


def test_ingest_appends_the_encoded_frames(rdb: redis.Redis) -> None:
    sid = "a" * 32
    _open(rdb, sid)
    accepted, last, lag, dups = _ingest(rdb, sid, [0, 1, 1, 2])
    assert (accepted, int(last), lag, dups) == (3, 2, 3, [b"1"])
    frames = [decode_frame_entry(f) for _, f in rdb.xrange(frames_key(sid))]
    assert [(f.kind, f.seq, f.timestamp) for f in frames] == [
        ("frame", 0, 0.0), ("frame", 1, 0.025), ("frame", 2, 0.05)]
    assert frames[2].voltages.tolist() == [2.0] * 4
    assert registered(rdb) is registered(rdb)  # registered once per client


def test_ingest_refuses_a_batch_with_a_seq_beyond_the_window(rdb: redis.Redis) -> None:
    sid = "c" * 32
    _open(rdb, sid)
    assert _ingest(rdb, sid, [1001]) == [SEQ_TOO_FAR]  # from last_seq -1
    assert _ingest(rdb, sid, [0, 1])[0] == 2
    assert _ingest(rdb, sid, [2, 3, 1004]) == [SEQ_TOO_FAR]  # the whole batch, nothing queued
    assert rdb.xlen(frames_key(sid)) == 2
    assert rdb.hget(session_key(sid), SessionField.LAST_SEQ.value) == b"1"
    accepted, last, _, _ = _ingest(rdb, sid, [1001])  # exactly the window ahead
    assert (accepted, int(last)) == (1, 1001)


def test_ingest_keeps_the_backlog_under_its_bound(rdb: redis.Redis) -> None:
    sid = "c" * 32
    _open(rdb, sid)
    assert _ingest(rdb, sid, [0, 1, 2], most=4)[0] == 3
    assert _ingest(rdb, sid, [2, 3, 4], most=4) == [BACKLOG_FULL, 3]  # 3 + 2 new > 4: none
    assert rdb.xlen(frames_key(sid)) == 3
    assert _ingest(rdb, sid, [1, 2], most=4)[3] == [b"1", b"2"]  # duplicates still answered
    rdb.hset(counters_key(sid), Counter.RECONSTRUCTED.value, 2)  # a worker catches up
    accepted, last, lag, _ = _ingest(rdb, sid, [3, 4], most=4)
    assert (accepted, int(last), lag) == (2, 4, 3)


def test_scripts_refuse_a_failed_session(rdb: redis.Redis) -> None:
    import numpy as np

    sid = "b" * 32
    _open(rdb, sid, SessionStatus.FAILED)
    assert _ingest(rdb, sid, [0]) == [FAILED]
    volts = np.zeros(4, np.float32)
    reply = registered(rdb).reference(
        keys=[session_key(sid), frames_key(sid)],
        args=[volts.tobytes(), *flat(encode_reference(volts))])
    assert reply == FAILED
    assert rdb.xlen(frames_key(sid)) == 0
