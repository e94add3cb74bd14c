"""The keyring: key files, key ids, the [node] key settings, following a key
file while running, and the refusal to run exposed without a key (real nodes
on real sockets, the sqlite lock in tmp_path)."""

from __future__ import annotations

import os

import anyio
import pytest

import hedgeplug
from hedgeplug import keyring as keyring_module
from hedgeplug.config import load_config
from hedgeplug.errors import ConfigError
from hedgeplug.keyring import (
    MAX_KEYS,
    ClusterKey,
    Keyring,
    derive_key,
    exposed_addresses,
    follow_key_file,
    generate_key,
    keyring_for,
    parse_key_lines,
)
from hedgeplug.wire import Codec, Envelope, Kind


def write_keys(path, *lines: str) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    path.chmod(0o600)
    return str(path)


# ------------------------------------------------------------ keys and key files


def test_derivation_is_the_one_of_wire_version_1():
    import hashlib

    assert derive_key("s3cret") == hashlib.sha256(b"hedgeplug/v1 cluster key\0s3cret").digest()


def test_generated_keys_are_random_and_256_bits():
    keys = {generate_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(len(k) == 43 and k.strip() == k and not k.startswith("#") for k in keys)


def test_key_file_lines_comments_and_blanks():
    text = "# rotation 2026-11: new key first\n\n  new-key  \n# the old one\nold-key\n"
    assert parse_key_lines(text, "f") == ["new-key", "old-key"]
    with pytest.raises(ConfigError, match="key file f holds no key .*hedgeplug keygen"):
        parse_key_lines("# nothing\n\n", "f")


def test_keyring_order_ids_and_lookup():
    ring = Keyring(["b", "a", "b"])
    assert len(ring) == 2 and ring.primary == ClusterKey.from_secret("b")
    assert ring.ids == [ClusterKey.from_secret("b").hex, ClusterKey.from_secret("a").hex]
    assert ring.candidates(ClusterKey.from_secret("a").id) == (ClusterKey.from_secret("a"),)
    assert ring.candidates(b"\0\0\0\0") == ()
    assert ring.describe() == f"primary key {ring.ids[0]}, also accepts {ring.ids[1]}"
    assert not Keyring() and Keyring().primary is None
    with pytest.raises(ConfigError, match=f"at most {MAX_KEYS}"):
        Keyring([str(i) for i in range(MAX_KEYS + 1)])


def test_node_settings_key_file(tmp_path):
    path = write_keys(tmp_path / "keys", "# primary first", "k2", "k1")
    config = load_config(data={"node": {"key_file": path}}, env={})
    assert keyring_for(config.node).ids == Keyring(["k2", "k1"]).ids
    single = load_config(data={"node": {"key": "k1"}}, env={})
    assert keyring_for(single.node).ids == Keyring(["k1"]).ids
    assert not keyring_for(load_config(data={}, env={}).node)


def test_keys_from_the_environment(tmp_path):
    path = write_keys(tmp_path / "keys", "k2", "k1")
    config = load_config(env={"HEDGEPLUG_NODE_KEY_FILE": path})
    assert keyring_for(config.node).ids == Keyring(["k2", "k1"]).ids
    config = load_config(env={"HEDGEPLUG_NODE_KEY": "k1"})
    assert keyring_for(config.node).ids == Keyring(["k1"]).ids
    config = load_config(env={"HEDGEPLUG_NODE_INSECURE": "true"})
    assert config.node.insecure is True


@pytest.mark.parametrize(
    "node, expected",
    [
        ({"key_file": "{tmp}/missing"}, r"\[node\] key_file: .*key file .*missing does not exist"),
        ({"key_file": "{tmp}"}, r"\[node\] key_file: .*is a directory"),
        ({"key_file": "{tmp}/empty"}, r"\[node\] key_file: .*holds no key"),
        ({"key_file": "{tmp}/keys", "key": "k"}, r"\[node\] key.*both set; keep one"),
        ({"insecure": "maybe"}, r"\[node\] insecure: expected true or false"),
    ],
)
def test_bad_key_settings_name_the_setting(tmp_path, node, expected):
    write_keys(tmp_path / "empty", "# no key yet")
    write_keys(tmp_path / "keys", "k")
    node = {k: v.replace("{tmp}", str(tmp_path)) for k, v in node.items()}
    with pytest.raises(ConfigError, match=expected):
        load_config(data={"node": node}, env={})


def test_a_key_file_others_can_read_is_warned_about(tmp_path, caplog):
    path = write_keys(tmp_path / "keys", "k")
    os.chmod(path, 0o644)
    keyring_for(load_config(data={"node": {"key_file": path}}, env={}).node)
    assert "readable by other users (mode 644); chmod 600" in caplog.text


# ------------------------------------------------------------ following a key file


class Holder:
    def __init__(self, ring: Keyring) -> None:
        self.keyring = ring
        self.counts: dict[str, int] = {}

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


@pytest.mark.anyio
async def test_a_followed_key_file_is_applied_and_a_broken_one_ignored(tmp_path, monkeypatch):
    monkeypatch.setattr(keyring_module, "KEY_FILE_SETTLE", 0.02)
    path = write_keys(tmp_path / "keys", "k1")
    holder = Holder(Keyring(["k1"]))

    async def until(what: str, n: int) -> None:
        with anyio.fail_after(5):
            while holder.counts.get(what, 0) < n:
                await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow_key_file, holder, path, holder.count, 0.05)
        await anyio.sleep(0.2)
        assert holder.counts == {}  # the file says what the node already holds
        write_keys(tmp_path / "keys", "k1", "k2")
        await until("keyring.reloads", 1)
        assert holder.keyring.ids == Keyring(["k1", "k2"]).ids
        write_keys(tmp_path / "keys", "# emptied by mistake")
        await until("keyring.reload-errors", 1)
        assert holder.keyring.ids == Keyring(["k1", "k2"]).ids  # kept
        os.unlink(path)
        await until("keyring.reload-errors", 2)
        write_keys(tmp_path / "keys", "k2")
        await until("keyring.reloads", 2)
        assert holder.keyring.ids == Keyring(["k2"]).ids
        write_keys(tmp_path / "keys", "# only a comment added", "k2")
        await anyio.sleep(0.3)
        assert holder.counts == {"keyring.reloads": 2, "keyring.reload-errors": 2}
        tg.cancel_scope.cancel()


def test_a_codec_seals_with_whatever_keyring_it_holds_now():
    codec = Codec("c", Keyring(["k1"]))
    e = Envelope("c", "n", "ch", 1, Kind.MESSAGE, None)
    codec.keyring = Keyring(["k2", "k1"])
    assert Codec("c", "k2").decode(codec.encode(e)) == e


# ------------------------------------------------------------ secure by default


class FakeTransport:
    """Only the options attribute exposed_addresses looks at (named a fake)."""

    def __init__(self, bind: str) -> None:
        self.options = type("Options", (), {"bind": bind})()


@pytest.mark.parametrize(
    "bind, advertised, exposed",
    [
        ("127.0.0.1:0", "127.0.0.1:4000", []),
        ("[::1]:0", "[::1]:4000", []),
        ("localhost:0", "localhost:4000", []),
        ("0.0.0.0:0", "127.0.0.1:4000", ["0.0.0.0:0"]),
        ("[::]:0", "[::1]:4000", ["[::]:0"]),
        ("127.0.0.1:0", "10.1.2.3:4000", ["10.1.2.3:4000"]),
        ("192.168.1.5:0", "192.168.1.5:4000", ["192.168.1.5:0", "192.168.1.5:4000"]),
        ("127.0.0.1:0", "node-7.internal:4000", ["node-7.internal:4000"]),
    ],
)
def test_exposed_addresses(bind, advertised, exposed):
    assert exposed_addresses(FakeTransport(bind), advertised) == exposed


def test_in_process_addresses_are_not_exposed():
    assert exposed_addresses(object(), "mem://node-1") == []


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def node_config(tmp_path, name="solo", **node):
    return {
        "node": {"id": name, "cluster": "exposure", "stop_timeout": "1s", **node},
        # shared_store: these tests are about keys, not the host-local store rule.
        "lock": {"use": "sqlite", "path": str(tmp_path / "lock.db"), "ttl": "2s", "shared_store": True},
        "transport": {"use": "tcp", "bind": "127.0.0.1:0"},
    }


@pytest.mark.anyio
@pytest.mark.parametrize(
    "transport",
    [{"bind": "0.0.0.0:0"}, {"bind": "[::]:0"}, {"bind": "127.0.0.1:0", "advertise": "10.9.8.7:0"}],
)
async def test_an_exposed_node_without_a_key_refuses_to_start(tmp_path, transport):
    config = node_config(tmp_path)
    config["transport"].update(transport)
    with pytest.raises((ConfigError, BaseExceptionGroup)) as info:
        async with hedgeplug.open_node(config):
            pytest.fail("the node started")
    (error,) = leaves(info.value)  # open_node raises start-up errors from its task group
    assert isinstance(error, ConfigError)
    message = str(error)
    for hint in ("refusing to start", "hedgeplug keygen", "key_file", "HEDGEPLUG_NODE_KEY_FILE",
                 "insecure = true"):
        assert hint in message


@pytest.mark.anyio
async def test_an_exposed_node_starts_with_a_key_or_when_marked_insecure(tmp_path, caplog):
    path = write_keys(tmp_path / "keys", generate_key())
    for node in ({"key_file": path}, {"key": "k"}, {"insecure": True}):
        config = node_config(tmp_path, **node)
        config["transport"]["bind"] = "0.0.0.0:0"
        async with hedgeplug.open_node(config) as n:
            assert n.address.startswith("127.0.0.1:")
    assert "running without a cluster key on 0.0.0.0:0 ([node] insecure = true)" in caplog.text


@pytest.mark.anyio
async def test_loopback_and_in_process_nodes_need_no_key(tmp_path):
    async with hedgeplug.open_node(node_config(tmp_path)) as n:
        assert n.address.startswith("127.0.0.1:")
    memory = {
        "node": {"id": "m", "cluster": "exposure-mem", "stop_timeout": "1s"},
        "lock": {"use": "memory", "store": "exposure-mem"},
        "transport": {"use": "memory", "network": "exposure-mem"},
    }
    async with hedgeplug.open_node(memory) as n:
        assert n.address == "mem://m"


# ------------------------------------------------------------ replay, end to end


@pytest.mark.anyio
async def test_a_node_runs_a_replayed_frame_once(tmp_path):
    """An on-path attacker's replay: the same sealed bytes delivered twice
    over a real socket reach the handler once and are counted the second time."""
    from hedgeplug.transport.tcp import TcpTransport

    calls = []
    async with hedgeplug.open_node(node_config(tmp_path, key="k")) as node:
        node.on_broadcast(lambda payload, sender: calls.append((payload, sender)) or "done")
        frame = Codec("exposure", "k").encode(
            Envelope("exposure", "someone", "app.broadcast", 1, Kind.MESSAGE, "pay once")
        )
        wire_tap = TcpTransport()
        try:
            answer = await wire_tap.request(node.address, frame, 5)
            assert Codec("exposure", "k").decode(answer).payload == "done"
            assert await wire_tap.request(node.address, frame, 5) == b""  # dropped: no answer
        finally:
            await wire_tap.aclose()
        assert calls == [("pay once", "someone")]
        assert node.counters.get("drop.replay") == 1
