"""Home layout and modes, identity and peer ids, config validation, the instance lock."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshd.config import ApiOptions, Config, load_config, write_default_config
from meshd.errors import AlreadyRunning, ConfigError, HomeError, IdentityError
from meshd.home import Home, init_home
from meshd.p2p.identity import Identity, load_identity, peer_id_from_public_key

REPO = Path(__file__).resolve().parents[1]

# Seed 0x01 * 32; the peer id was checked against py-libp2p and go-libp2p's
# encoding (protobuf 08 01 12 20 + key, identity multihash 00 24, base58btc).
SEED = b"\x01" * 32
PUBLIC_HEX = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
PEER_ID = "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ----------------------------------------------------------------- init


def test_init_creates_config_identity_token_and_block_store(tmp_path: Path) -> None:
    home = init_home(tmp_path / "home")
    assert home.config_path.is_file() and home.blocks_dir.is_dir()
    assert _mode(home.identity_path) == 0o600 and len(home.identity_path.read_bytes()) == 32
    assert _mode(home.token_path) == 0o600 and len(home.read_token()) >= 32
    assert _mode(home.path) == 0o700
    assert home.load_config() == Config(node=home.load_config().node, runner=home.load_config().runner)
    assert home.load_identity().peer_id.startswith("12D3KooW")


def test_init_refuses_an_existing_home_unless_forced(tmp_path: Path) -> None:
    first = init_home(tmp_path)
    old_peer = first.load_identity().peer_id
    with pytest.raises(HomeError, match="--force"):
        init_home(tmp_path)
    assert first.load_identity().peer_id == old_peer
    (first.blocks_dir / "keep").write_bytes(b"x")
    init_home(tmp_path, force=True)
    assert first.load_identity().peer_id != old_peer
    assert (first.blocks_dir / "keep").exists()  # --force keeps the block store


def test_init_into_an_existing_empty_directory_is_allowed(tmp_path: Path) -> None:
    init_home(tmp_path)
    assert Home(tmp_path).load_identity()


def test_init_with_invalid_override_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        init_home(tmp_path / "h", api={"listen": "nowhere"})
    assert not (tmp_path / "h").exists()


def test_uninitialised_home_is_reported(tmp_path: Path) -> None:
    with pytest.raises(HomeError, match="meshd init"):
        Home(tmp_path).require_initialised()


# ----------------------------------------------------------------- identity


def test_peer_id_matches_the_libp2p_vector() -> None:
    identity = Identity.from_seed(SEED)
    assert identity.public_hex == PUBLIC_HEX
    assert identity.peer_id == PEER_ID
    assert peer_id_from_public_key(bytes.fromhex(PUBLIC_HEX)) == PEER_ID


def test_peer_id_agrees_with_py_libp2p_for_random_keys() -> None:
    ed25519 = pytest.importorskip("libp2p.crypto.ed25519")
    peer = pytest.importorskip("libp2p.peer.id")
    for i in range(20):
        seed = os.urandom(32)
        pair = ed25519.create_new_key_pair(seed)
        expected = peer.ID.from_pubkey(pair.public_key).to_base58()
        assert Identity.from_seed(seed).peer_id == expected, i


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    home = init_home(tmp_path)
    for loose in (0o644, 0o640, 0o604, 0o660):
        home.identity_path.chmod(loose)
        with pytest.raises(IdentityError, match="chmod 600"):
            home.load_identity()
    home.identity_path.chmod(0o400)
    assert home.load_identity()


def test_loose_token_file_is_refused(tmp_path: Path) -> None:
    home = init_home(tmp_path, api={"listen": "0.0.0.0:7600"})
    home.token_path.chmod(0o644)
    with pytest.raises(IdentityError):
        home.api_options(home.load_config())


def test_pem_key_is_accepted(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path = tmp_path / "identity.key"
    path.write_bytes(pem)
    path.chmod(0o600)
    assert load_identity(path).peer_id == PEER_ID


@pytest.mark.parametrize("content", [b"", b"x" * 31, b"x" * 33, b"-----BEGIN PRIVATE KEY-----\ngarbage\n"])
def test_malformed_key_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "identity.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(IdentityError):
        load_identity(path)


def test_identity_repr_hides_the_private_key() -> None:
    assert SEED.hex() not in repr(Identity.from_seed(SEED))


# ----------------------------------------------------------------- config


def test_default_config_has_the_documented_values(tmp_path: Path) -> None:
    write_default_config(tmp_path)
    c = load_config(tmp_path)
    assert c.node.roles == ("manager", "runner")
    assert c.api == ApiOptions(listen="127.0.0.1:7600", max_body_bytes=8 * 1024 * 1024)
    assert c.runner.slots == (os.cpu_count() or 1)
    assert (c.runner.max_attempts, c.runner.lease_s, c.runner.task_timeout_s, c.runner.warm) == (3, 10.0, 60.0, True)
    assert c.engines.trusted_publishers == () and c.engines.allow == ()
    assert c.p2p.listen == ("/ip4/0.0.0.0/tcp/4601",) and c.p2p.bootstrap == () and c.p2p.mdns is False
    assert c.ipfs.api == "" and c.log.level == "info"


def test_partial_config_file_keeps_defaults_for_missing_keys(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[runner]\nslots = 4\nlease_s = 5\n')
    c = load_config(tmp_path)
    assert c.runner.slots == 4 and c.runner.lease_s == 5.0 and c.runner.max_attempts == 3


@pytest.mark.parametrize("toml,named", [
    ('[api]\nlisen = "x"\n', "lisen"),
    ('[runner]\nslot = 3\n', "slot"),
    ('[apii]\n', "apii"),
    ('[api]\ntoken = "secretsecretsecret"\n', "token"),
])
def test_unknown_keys_are_rejected_by_name(tmp_path: Path, toml: str, named: str) -> None:
    (tmp_path / "config.toml").write_text(toml)
    with pytest.raises(ConfigError, match=named):
        load_config(tmp_path)


@pytest.mark.parametrize("toml", [
    '[node]\nroles = ["boss"]\n',
    '[node]\nroles = []\n',
    '[api]\nlisten = "7600"\n',
    '[api]\nlisten = "host:99999"\n',
    '[api]\nmax_body_bytes = 0\n',
    '[runner]\nslots = 0\n',
    '[runner]\nslots = true\n',
    '[runner]\nlease_s = -1\n',
    '[runner]\nwarm = "yes"\n',
    '[engines]\ntrusted_publishers = ["abc"]\n',
    '[engines]\nallow = ["notacid"]\n',
    '[p2p]\nlisten = ["0.0.0.0:4601"]\n',
    '[p2p]\nmdns = 1\n',
    '[ipfs]\napi = "localhost:5001"\n',
    '[log]\nlevel = "loud"\n',
    'not toml at all [',
])
def test_invalid_values_are_rejected(tmp_path: Path, toml: str) -> None:
    (tmp_path / "config.toml").write_text(toml)
    with pytest.raises(ConfigError):
        load_config(tmp_path)


def test_overrides_win_over_the_file_and_are_validated(tmp_path: Path) -> None:
    write_default_config(tmp_path, api={"listen": "127.0.0.1:1"})
    c = load_config(tmp_path, {"api": {"listen": "127.0.0.1:2"}, "p2p": {"bootstrap": ["/ip4/1.2.3.4/tcp/1"]}})
    assert c.api.listen == "127.0.0.1:2" and c.p2p.bootstrap == ("/ip4/1.2.3.4/tcp/1",)
    with pytest.raises(ConfigError, match="bogus"):
        load_config(tmp_path, {"api": {"bogus": 1}})


def test_api_options_carry_all_three_tokens_on_loopback_too(tmp_path: Path) -> None:
    home = init_home(tmp_path)
    options = home.api_options(home.load_config())
    assert options.token == home.read_token() == home.read_token("admin")
    assert options.submit_token == home.read_token("submit") and options.read_token == home.read_token("read")
    assert len({options.token, options.submit_token, options.read_token}) == 3
    for scope in ("admin", "submit", "read"):
        assert _mode(home.token_path_for(scope)) == 0o600
    assert not any(secret in repr(options) for secret in (options.token, options.submit_token, options.read_token))


def test_a_home_made_before_scoped_tokens_gains_them_and_keeps_its_admin_token(tmp_path: Path) -> None:
    home = init_home(tmp_path)
    admin = home.read_token()
    home.token_path_for("read").unlink()
    home.token_path_for("submit").unlink()
    with pytest.raises(IdentityError, match="api-read.token"):
        home.read_token("read")
    options = home.api_options(home.load_config())
    assert options.token == admin
    assert options.read_token == home.read_token("read") and _mode(home.token_path_for("read")) == 0o600
    assert home.api_options(home.load_config()) == options  # existing tokens are never replaced


# ----------------------------------------------------------------- lock


def test_second_daemon_on_the_same_home_is_refused(tmp_path: Path) -> None:
    home = init_home(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from meshd.home import Home
            with Home({str(home.path)!r}).lock():
                print("locked", flush=True)
                sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(AlreadyRunning, match=rf"another meshd is running on .* \(pid {holder.pid}\)"):
            with home.lock():
                pass
        with pytest.raises(AlreadyRunning):
            init_home(home.path, force=True)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    # The kernel dropped the lock with the process: the home is free again.
    with home.lock():
        assert home.lock_path.read_text().strip() == str(os.getpid())
