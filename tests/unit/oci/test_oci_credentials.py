"""Docker config credentials: auths, credHelpers, credsStore, key matching, login/logout writes."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelctl.config import Config
from modelctl.errors import UsageError
from modelctl.oci.credentials import (
    DOCKER_HUB_KEY,
    Credentials,
    erase_credentials,
    lookup,
    server_key,
    store_credentials,
)

SECRET = "s3cr3t-P@ss"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(home=tmp_path / "home", docker_config=tmp_path / "docker")


def write(config: Config, doc: dict[str, Any] | str) -> Path:
    config.docker_config.mkdir(parents=True, exist_ok=True)
    path = config.docker_config / "config.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


@pytest.fixture
def helper_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on PATH for fake docker-credential-* programs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bin_dir


def fake_helper(bin_dir: Path, name: str, answers: dict[str, dict[str, str]], *, exit_code: int = 0) -> Path:
    """A ``docker-credential-<name>`` that answers ``get`` for the server URLs in ``answers``; logs its stdin."""
    script = bin_dir / f"docker-credential-{name}"
    log = bin_dir / f"{name}.log"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"answers = {answers!r}\n"
        "server = sys.stdin.read()\n"
        f"open({str(log)!r}, 'a').write(sys.argv[1] + ' ' + server + '\\n')\n"
        f"if {exit_code}: print('boom', file=sys.stderr); sys.exit({exit_code})\n"
        "if server not in answers: print('credentials not found in native keychain'); sys.exit(1)\n"
        "print(json.dumps(dict(ServerURL=server, **answers[server])))\n"
    )
    script.chmod(0o755)
    return log


# -- auths -------------------------------------------------------------------------------------------------


def test_missing_file_means_no_credentials(config: Config) -> None:
    assert lookup(config, "reg.test") is None


@pytest.mark.parametrize("text", ["{not json", "[]", ""])
def test_malformed_file_means_no_credentials(config: Config, text: str) -> None:
    write(config, text)
    assert lookup(config, "reg.test") is None


def test_auth_field(config: Config) -> None:
    write(config, {"auths": {"reg.test": {"auth": b64(f"alice:{SECRET}")}}})
    assert lookup(config, "reg.test") == Credentials("alice", SECRET)


def test_password_with_colon(config: Config) -> None:
    write(config, {"auths": {"reg.test": {"auth": b64("alice:a:b:c")}}})
    assert lookup(config, "reg.test") == Credentials("alice", "a:b:c")


def test_username_password_fields(config: Config) -> None:
    write(config, {"auths": {"reg.test:5000": {"username": "bob", "password": SECRET}}})
    assert lookup(config, "reg.test:5000") == Credentials("bob", SECRET)
    assert lookup(config, "reg.test") is None


def test_identity_token(config: Config) -> None:
    write(config, {"auths": {"reg.test": {"auth": b64("alice:"), "identitytoken": "refresh-1"}}})
    assert lookup(config, "reg.test") == Credentials("alice", "", "refresh-1")


@pytest.mark.parametrize("auth", ["!!!not-base64", b64("no-colon"), b64("")])
def test_bad_auth_field_is_ignored(config: Config, auth: str) -> None:
    write(config, {"auths": {"reg.test": {"auth": auth}}})
    assert lookup(config, "reg.test") is None


@pytest.mark.parametrize("key", ["https://reg.test", "http://reg.test/", "reg.test/v2/", "https://REG.test/v1/"])
def test_url_keys_match_their_host(config: Config, key: str) -> None:
    write(config, {"auths": {key: {"auth": b64("alice:pw")}}})
    assert lookup(config, "reg.test") == Credentials("alice", "pw")


@pytest.mark.parametrize("key", [DOCKER_HUB_KEY, "docker.io", "index.docker.io", "https://registry-1.docker.io"])
@pytest.mark.parametrize("registry", ["docker.io", "registry-1.docker.io", "index.docker.io"])
def test_docker_hub_keys(config: Config, key: str, registry: str) -> None:
    write(config, {"auths": {key: {"auth": b64("alice:pw")}}})
    assert lookup(config, registry) == Credentials("alice", "pw")


def test_exact_hub_key_wins(config: Config) -> None:
    write(config, {"auths": {"docker.io": {"auth": b64("old:pw")}, DOCKER_HUB_KEY: {"auth": b64("new:pw")}}})
    assert lookup(config, "docker.io") == Credentials("new", "pw")


def test_server_key() -> None:
    assert server_key("docker.io") == DOCKER_HUB_KEY
    assert server_key("registry-1.docker.io") == DOCKER_HUB_KEY
    assert server_key("Reg.Test:5000") == "reg.test:5000"


# -- helpers -----------------------------------------------------------------------------------------------


def test_cred_helper(config: Config, helper_dir: Path) -> None:
    log = fake_helper(helper_dir, "test", {"reg.test": {"Username": "carol", "Secret": SECRET}})
    write(config, {"credHelpers": {"reg.test": "test"}, "auths": {"reg.test": {"auth": b64("stale:pw")}}})
    assert lookup(config, "reg.test") == Credentials("carol", SECRET)
    assert log.read_text() == "get reg.test\n"


def test_cred_helper_docker_hub_gets_index_url(config: Config, helper_dir: Path) -> None:
    log = fake_helper(helper_dir, "test", {DOCKER_HUB_KEY: {"Username": "carol", "Secret": SECRET}})
    write(config, {"credHelpers": {DOCKER_HUB_KEY: "test"}})
    assert lookup(config, "registry-1.docker.io") == Credentials("carol", SECRET)
    assert log.read_text() == f"get {DOCKER_HUB_KEY}\n"


def test_creds_store(config: Config, helper_dir: Path) -> None:
    fake_helper(helper_dir, "store", {"reg.test": {"Username": "dave", "Secret": SECRET}})
    write(config, {"credsStore": "store"})
    assert lookup(config, "reg.test") == Credentials("dave", SECRET)
    assert lookup(config, "other.test") is None


def test_cred_helper_wins_over_store(config: Config, helper_dir: Path) -> None:
    fake_helper(helper_dir, "one", {"reg.test": {"Username": "one", "Secret": "1"}})
    fake_helper(helper_dir, "two", {"reg.test": {"Username": "two", "Secret": "2"}})
    write(config, {"credsStore": "two", "credHelpers": {"reg.test": "one"}})
    assert lookup(config, "reg.test") == Credentials("one", "1")


def test_helper_identity_token(config: Config, helper_dir: Path) -> None:
    fake_helper(helper_dir, "test", {"reg.test": {"Username": "<token>", "Secret": "refresh-2"}})
    write(config, {"credHelpers": {"reg.test": "test"}})
    assert lookup(config, "reg.test") == Credentials("", "", "refresh-2")


def test_missing_helper_falls_back_to_auths(config: Config, helper_dir: Path) -> None:
    write(config, {"credsStore": "desktop-not-installed", "auths": {"reg.test": {"auth": b64("eve:pw")}}})
    assert lookup(config, "reg.test") == Credentials("eve", "pw")


def test_missing_helper_without_auths_is_none(config: Config, helper_dir: Path) -> None:
    write(config, {"credHelpers": {"reg.test": "not-installed"}})
    assert lookup(config, "reg.test") is None


def test_failing_helper_is_none_not_a_crash(config: Config, helper_dir: Path) -> None:
    fake_helper(helper_dir, "broken", {}, exit_code=3)
    write(config, {"credHelpers": {"reg.test": "broken"}})
    assert lookup(config, "reg.test") is None


def test_helper_printing_garbage_is_none(config: Config, helper_dir: Path) -> None:
    script = helper_dir / "docker-credential-garbage"
    script.write_text("#!/bin/sh\necho 'not json'\n")
    script.chmod(0o755)
    write(config, {"credHelpers": {"reg.test": "garbage"}})
    assert lookup(config, "reg.test") is None


def test_helper_name_cannot_escape(config: Config, helper_dir: Path) -> None:
    write(config, {"credHelpers": {"reg.test": "../../bin/sh"}})
    assert lookup(config, "reg.test") is None


# -- login / logout ----------------------------------------------------------------------------------------


def test_store_round_trip_mode_and_other_keys_kept(config: Config) -> None:
    write(config, {"auths": {"other.test": {"auth": b64("x:y")}}, "credHelpers": {"z.test": "z"}, "psFormat": "t"})
    path = store_credentials(config, "reg.test", "alice", SECRET)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["auths"]["reg.test"] == {"auth": b64(f"alice:{SECRET}")}
    assert doc["auths"]["other.test"] == {"auth": b64("x:y")}
    assert doc["credHelpers"] == {"z.test": "z"} and doc["psFormat"] == "t"
    assert lookup(config, "reg.test") == Credentials("alice", SECRET)
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temp file left


def test_store_creates_directory_and_uses_hub_key(config: Config) -> None:
    path = store_credentials(config, "docker.io", "alice", "pw")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert list(json.loads(path.read_text())["auths"]) == [DOCKER_HUB_KEY]


def test_store_follows_symlinked_config(config: Config, tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("{}")
    config.docker_config.mkdir()
    (config.docker_config / "config.json").symlink_to(real)
    store_credentials(config, "reg.test", "alice", "pw")
    assert (config.docker_config / "config.json").is_symlink()
    assert "reg.test" in json.loads(real.read_text())["auths"]


def test_store_refuses_to_clobber_malformed_file(config: Config) -> None:
    path = write(config, "{broken")
    with pytest.raises(UsageError, match="not a JSON object"):
        store_credentials(config, "reg.test", "alice", "pw")
    assert path.read_text() == "{broken"


@pytest.mark.parametrize(("user", "password"), [("", "pw"), ("a:b", "pw"), ("alice", "")])
def test_store_rejects_bad_input(config: Config, user: str, password: str) -> None:
    with pytest.raises(UsageError):
        store_credentials(config, "reg.test", user, password)


def test_erase(config: Config) -> None:
    write(config, {"auths": {"https://reg.test": {"auth": b64("a:b")}, "reg.test": {}, "keep.test": {}}})
    assert erase_credentials(config, "reg.test") is True
    assert json.loads((config.docker_config / "config.json").read_text())["auths"] == {"keep.test": {}}
    assert erase_credentials(config, "reg.test") is False


def test_erase_without_file(config: Config) -> None:
    assert erase_credentials(config, "reg.test") is False


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    user=st.text(min_size=1, max_size=20).filter(lambda u: ":" not in u),
    password=st.text(min_size=1, max_size=40),
)
def test_store_lookup_round_trip(config: Config, user: str, password: str) -> None:
    store_credentials(config, "reg.test", user, password)
    found = lookup(config, "reg.test")
    assert found == Credentials(user, password)
    assert password not in repr(found) or password in repr(Credentials(user, ""))
