"""Plugin package format, with no network: zip safety, checksum vectors, signatures, file rewriting."""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import stat
import zipfile
from pathlib import Path

import pytest

from scripts.core.errors import BadInput
from scripts.plugins import common as plugin_common
from scripts.plugins import daemon as plugin_daemon
from scripts.plugins import repackage as plugins
from scripts.plugins import sign as plugin_sign
from scripts.plugins import wheels as plugin_wheels
from scripts.plugins.common import PluginError, UnsafeArchive
from scripts.plugins.daemon import Target
from scripts.plugins.sign import SignatureError
from tests.conftest import FIXTURES

# The worked example of the format notes (§4): entries in ZIP order and their exact digests.
EXAMPLE = [("main.py", b"print('hi')\n"), ("_assets/icon.svg", b"<svg/>"),
           (".verification.dify.json", b'{"authorized_category":"community"}')]
EXAMPLE_DIGESTS = ["caf026f25d7140209f98072605307a438914b9ce6f3c14b23d15d9667241de52",
                   "d4dc56669143034f31aa309635d4113d9ad76a02b1739da22c965ed2049be9e6",
                   "6c1558142d852d376df6ab38f7cae98e9585dc7e324d3e207c8ab488c33f8042"]
EXAMPLE_MESSAGE_SHA256 = "50e784b74fc67a5f6b1b5a3e890603065800dac2a2a8c21a8d295393b0a9301c"
EXAMPLE_CHECKSUM = "283f07e678b7a025fd11bc98c887752cb4d24abad8d7961dc1dab0558cb7104f"


@pytest.fixture(scope="module")
def keypair(tmp_path_factory) -> tuple[Path, Path]:
    """A 2048-bit pair (fast); the 4096-bit default is tested once in test_keygen_defaults."""
    private, public = plugin_sign.generate_keypair(2048)
    d = tmp_path_factory.mktemp("keys")
    (d / "k.pem").write_bytes(private)
    (d / "p.pem").write_bytes(public)
    return d / "k.pem", d / "p.pem"


def _zip(path: Path, members: list[tuple[zipfile.ZipInfo | str, bytes]], comment: bytes = b"") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in members:
            zf.writestr(info, data)
        zf.comment = comment
    return path


# ------------------------------------------------------------------------------ checksum & signature

def test_worked_example_digests_message_and_checksum():
    digests = [hashlib.sha256(data).digest() for _, data in EXAMPLE]
    assert [d.hex() for d in digests] == EXAMPLE_DIGESTS
    message = plugin_sign.signing_message(digests, 1700000000)
    assert len(message) == 106
    assert hashlib.sha256(message).hexdigest() == EXAMPLE_MESSAGE_SHA256
    pairs = [(name, d) for (name, _), d in zip(EXAMPLE, digests)]
    assert plugin_sign.checksum_from_digests(pairs) == EXAMPLE_CHECKSUM
    # order-independent; a later duplicate wins
    assert plugin_sign.checksum_from_digests(list(reversed(pairs))) == EXAMPLE_CHECKSUM
    assert plugin_sign.checksum_from_digests([("main.py", b"\0" * 32)] + pairs) == EXAMPLE_CHECKSUM


def test_written_example_package_matches_vectors(tmp_path, keypair):
    key = plugin_sign.load_private_key(keypair[0])
    written = plugin_sign.write_package(tmp_path / "ex.difypkg", EXAMPLE[:2], sign_key=key, signed_at=1700000000)
    assert written.checksum == EXAMPLE_CHECKSUM == plugin_sign.package_checksum(written.path)
    assert plugin_sign.identifier("airgap", "demo", "0.0.1", written.checksum) == \
        f"airgap/demo:0.0.1@{EXAMPLE_CHECKSUM}"
    with zipfile.ZipFile(written.path) as zf:
        assert zf.namelist() == [n for n, _ in EXAMPLE]           # verification file written last
        assert zf.read(".verification.dify.json") == EXAMPLE[2][1]
        assert all(i.compress_type == zipfile.ZIP_DEFLATED and not i.is_dir() for i in zf.infolist())
        comment = json.loads(zf.comment)
    assert comment["time"] == 1700000000 and set(comment) == {"signature", "time"}
    assert b" " not in zf.comment                                   # compact JSON
    # the signature is over exactly the §4 message
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    message = plugin_sign.signing_message([bytes.fromhex(d) for d in EXAMPLE_DIGESTS], 1700000000)
    plugin_sign.load_public_key(keypair[1]).verify(base64.b64decode(comment["signature"]), message,
                                                   padding.PKCS1v15(), hashes.SHA256())


def test_identifier_rejects_what_the_daemon_rejects():
    with pytest.raises(Exception, match="not accepted"):
        plugin_sign.identifier("Bad Author", "x", "1.0.0", EXAMPLE_CHECKSUM)
    assert plugin_sign.identifier("", "x", "1.0.0", EXAMPLE_CHECKSUM) == f"x:1.0.0@{EXAMPLE_CHECKSUM}"


def _rewrite_with_change(src: Path, dst: Path, victim: str) -> None:
    """Copy a package, flipping one byte of ``victim`` and keeping the signature comment."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = bytearray(zin.read(info))
            if info.filename == victim:
                data[0] ^= 0x01
            zout.writestr(info, bytes(data))
        zout.comment = zin.comment


@pytest.mark.parametrize("victim", ["manifest.yaml", "main.py", "_assets/icon.svg", "requirements.txt",
                                    ".verification.dify.json"])
def test_signature_verifies_and_breaks_on_one_changed_byte(tmp_path, keypair, victim):
    files = [("manifest.yaml", b"name: demo\n"), ("main.py", b"print('hi')\n"), ("_assets/icon.svg", b"<svg/>"),
             ("requirements.txt", b"--no-index\n--find-links ./wheels/\n")]
    signed = plugin_sign.write_package(tmp_path / "s.difypkg", files,
                                       sign_key=plugin_sign.load_private_key(keypair[0]))
    ok = plugin_sign.verify_package(signed.path, [keypair[1]])
    assert ok.signed and ok.verified and ok.category == "community"
    tampered = tmp_path / "t.difypkg"
    _rewrite_with_change(signed.path, tampered, victim)
    bad = plugin_sign.verify_package(tampered, [keypair[1]])
    assert bad.signed and not bad.verified and "does not verify" in bad.reason


def test_other_key_and_unsigned_do_not_verify(tmp_path, keypair):
    other_priv, other_pub = plugin_sign.generate_keypair(2048)
    (tmp_path / "other.pem").write_bytes(other_pub)
    signed = plugin_sign.write_package(tmp_path / "s.difypkg", EXAMPLE[:2],
                                       sign_key=plugin_sign.load_private_key(keypair[0]))
    assert not plugin_sign.verify_package(signed.path, [tmp_path / "other.pem"]).verified
    # any listed key verifying is enough, as in the daemon
    assert plugin_sign.verify_package(signed.path, [tmp_path / "other.pem", keypair[1]]).verified
    unsigned = plugin_sign.write_package(tmp_path / "u.difypkg", EXAMPLE[:2])
    result = plugin_sign.verify_package(unsigned.path, [keypair[1]])
    assert not result.signed and not result.verified
    with zipfile.ZipFile(unsigned.path) as zf:
        assert ".verification.dify.json" not in zf.namelist() and zf.comment == b""


def test_resigning_replaces_old_verification_file_and_keeps_checksum(tmp_path, keypair):
    first = plugin_sign.write_package(tmp_path / "a.difypkg", EXAMPLE[:2],
                                      sign_key=plugin_sign.load_private_key(keypair[0]), signed_at=1)
    again = plugin_sign.sign_package(first.path, keypair[0], out=tmp_path / "b.difypkg", signed_at=2)
    with zipfile.ZipFile(again.path) as zf:
        assert zf.namelist().count(".verification.dify.json") == 1
        assert zf.namelist()[-1] == ".verification.dify.json"
    assert again.checksum == first.checksum                        # re-signing does not change it
    assert plugin_sign.verify_package(again.path, [keypair[1]]).signed_at == 2


def test_keygen_defaults(tmp_path):
    private, public = plugin_sign.write_keypair(tmp_path / "keys")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN RSA PUBLIC KEY-----")
    assert plugin_sign.load_public_key(public).key_size == 4096
    with pytest.raises(SignatureError, match="already exists"):
        plugin_sign.write_keypair(tmp_path / "keys")


def test_key_formats_the_daemon_rejects(tmp_path, keypair):
    from cryptography.hazmat.primitives import serialization

    key = plugin_sign.load_private_key(keypair[0])
    pkix = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "pkix.pem").write_bytes(pkix)
    with pytest.raises(SignatureError, match="PKCS#1 'RSA PUBLIC KEY'.*RSAPublicKey_out"):
        plugin_sign.load_public_key(tmp_path / "pkix.pem")
    (tmp_path / "two.pem").write_bytes(keypair[1].read_bytes() * 2)
    with pytest.raises(SignatureError, match="2 PEM blocks"):
        plugin_sign.load_public_key(tmp_path / "two.pem")
    with pytest.raises(SignatureError, match="under 1024 bits"):
        plugin_sign.generate_keypair(512)


# ----------------------------------------------------------------------------------- zip safety

def _symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


@pytest.mark.parametrize("member, expected", [
    (("../evil", b"x"), "'../evil' has a '..' component"),
    (("assets/../../evil", b"x"), "'assets/../../evil' has a '..' component"),
    (("/tmp/evil-abs", b"x"), "'/tmp/evil-abs' is an absolute path"),
    (("C:/evil", b"x"), "'C:/evil' is an absolute path"),
    (("a\\..\\evil", b"x"), "contains a backslash"),
    (_symlink("_assets/link", "../../../../etc/passwd"), "'_assets/link' is a symbolic link"),
])
def test_unsafe_members_are_rejected_before_writing(tmp_path, member, expected):
    pkg = _zip(tmp_path / "bad.difypkg", [("manifest.yaml", b"name: x\n"), member])
    work = tmp_path / "area" / "work"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafeArchive, match=expected.replace("\\", "\\\\").replace("(", r"\(")):
        plugins.safe_extract(pkg, work)
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before                                   # nothing written, not even manifest.yaml
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil-abs").exists()


def test_zip_bomb_is_rejected_by_declared_and_real_size(tmp_path):
    bomb = _zip(tmp_path / "bomb.difypkg", [("manifest.yaml", b"x"), ("big.bin", b"\0" * (4 << 20))])
    assert bomb.stat().st_size < 64 << 10
    with pytest.raises(UnsafeArchive, match="'big.bin' declares 4.0 MiB.*zip bomb"):
        plugins.safe_extract(bomb, tmp_path / "w1", max_member=1 << 20)
    with pytest.raises(UnsafeArchive, match="more than 2.0 MiB uncompressed at 'c.bin'"):
        plugins.safe_extract(_zip(tmp_path / "many.difypkg", [(f"{n}.bin", b"\0" * (1 << 20)) for n in "abc"]),
                             tmp_path / "w2", max_total=2 << 20)
    # a member whose header lies about its size: the real inflated bytes are counted
    liar = tmp_path / "liar.difypkg"
    _zip(liar, [("small.bin", b"\0" * (1 << 20))])
    raw = bytearray(liar.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
        info = zf.infolist()[0]
    size_field = (1 << 20).to_bytes(4, "little")
    assert raw.count(size_field) == 2                          # local header + central directory
    liar.write_bytes(bytes(raw).replace(size_field, (100).to_bytes(4, "little")))
    with pytest.raises((UnsafeArchive, BadInput)):               # never a bare zipfile.BadZipFile
        plugins.safe_extract(liar, tmp_path / "w3")
    assert info.file_size == 1 << 20


def test_safe_extract_plain_package_and_directory_entries(tmp_path):
    pkg = _zip(tmp_path / "ok.difypkg", [("_assets/", b""), ("_assets/icon.svg", b"<svg/>"), ("main.py", b"x")])
    names = plugins.safe_extract(pkg, tmp_path / "w")
    assert names == ["_assets/icon.svg", "main.py"]
    assert stat.S_IMODE((tmp_path / "w" / "main.py").stat().st_mode) == 0o644


def test_write_package_refuses_unclean_names(tmp_path):
    for bad in ("dir/", "../x", "a/./b", "/abs"):
        with pytest.raises(Exception, match="refusing to write"):
            plugin_sign.write_package(tmp_path / "x.difypkg", [(bad, b"x")])
    assert not list(tmp_path.iterdir())                        # no partial file left


# -------------------------------------------------------------------------------- dependency files

def test_offline_requirements_start_with_no_index_and_find_links():
    pins = [plugin_wheels.Pin("dify-plugin", "0.5.0"), plugin_wheels.Pin("orjson", "3.10.0")]
    text = plugins.offline_requirements(pins, Target())
    lines = text.splitlines()
    assert lines[:2] == ["--no-index", "--find-links ./wheels/"]
    assert "dify-plugin==0.5.0" in lines and "orjson==3.10.0" in lines


def test_strip_index_options():
    text = ("-i https://mirror/simple\n--extra-index-url https://x\n--find-links /w\n--no-index\n"
            "dify_plugin>=0.4  # sdk\n--trusted-host mirror\norjson\n")
    assert plugin_wheels.strip_index_options(text) == "dify_plugin>=0.4  # sdk\norjson\n"


def test_offline_pyproject():
    text = '[project]\nname = "p"\nrequires-python = ">=3.11"\ndependencies = ["dify_plugin"]\n'
    out = plugins.offline_pyproject(text)
    assert out.startswith(text)
    for line in ("[tool.uv]", "no-index = true", 'find-links = ["./wheels"]',
                 "environments = [\"sys_platform == 'linux' and python_version == '3.12'\"]",
                 "package = false"):
        assert line in out
    with pytest.raises(PluginError, match=r"already has \[tool.uv\]"):
        plugins.offline_pyproject(text + "\n[tool.uv]\ndev-dependencies = []\n")
    with pytest.raises(PluginError, match=r"\[tool.uv\]"):
        plugins.offline_pyproject(text + "\n[[tool.uv.index]]\nurl = 'x'\n")
    with pytest.raises(PluginError, match="excludes Python 3.12"):
        plugins.offline_pyproject(text.replace(">=3.11", "<3.12"))


def test_ignore_file_keeps_wheels():
    text = "# python\n.venv\nwheels/\n/wheels\n*.whl\n!wheels/\n__pycache__/\nwheelsfoo/\n"
    cleaned, removed = plugins.clean_ignore_file(text)
    assert removed == ["wheels/", "/wheels", "*.whl"]
    assert cleaned == "# python\n.venv\n!wheels/\n__pycache__/\nwheelsfoo/\n"


# ------------------------------------------------------------------------------------- wheel tags

def test_target_tags_match_the_daemon_runtime():
    tags = {str(t) for t in Target("3.12", "amd64").tags()}
    for good in ("cp312-cp312-manylinux_2_17_x86_64", "cp312-cp312-manylinux_2_39_x86_64",
                 "cp312-cp312-manylinux2014_x86_64", "cp38-abi3-manylinux_2_28_x86_64", "py3-none-any",
                 "cp312-none-any"):
        assert good in tags, good
    for bad in ("cp312-cp312-manylinux_2_40_x86_64", "cp312-cp312-musllinux_1_2_x86_64",
                "cp311-cp311-manylinux_2_17_x86_64", "cp312-cp312-manylinux_2_17_aarch64",
                "cp313-abi3-manylinux_2_17_x86_64"):
        assert bad not in tags, bad
    assert "cp312-cp312-manylinux_2_28_aarch64" in {str(t) for t in Target("3.12", "arm64").tags()}
    assert Target("3.12", "arm64").uv_platform == "aarch64-manylinux_2_39"
    with pytest.raises(PluginError, match="unknown --arch"):
        Target("3.12", "x86")


PYDANTIC_CORE = ["pydantic_core-2.27.2-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                 "pydantic_core-2.27.2-cp312-cp312-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
                 "pydantic_core-2.27.2-cp312-cp312-musllinux_1_1_x86_64.whl",
                 "pydantic_core-2.27.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                 "pydantic_core-2.27.2.tar.gz"]


def test_choose_wheel_and_reasons():
    t = Target("3.12", "amd64")
    assert plugin_wheels.choose_wheel(PYDANTIC_CORE, t) == PYDANTIC_CORE[0]
    assert plugin_wheels.choose_wheel(PYDANTIC_CORE, Target("3.12", "arm64")) == PYDANTIC_CORE[1]
    assert plugin_wheels.choose_wheel(["x-1.0-py3-none-any.whl", "x-1.0.tar.gz"], t) == "x-1.0-py3-none-any.whl"
    assert plugin_wheels.why_no_wheel(["x-1.0.tar.gz"], t) == "sdist only (no wheels published)"
    assert plugin_wheels.why_no_wheel(PYDANTIC_CORE[3:], t).startswith("no wheel for Python 3.12 (cp312)")
    x86_only = [PYDANTIC_CORE[0], PYDANTIC_CORE[2]]
    assert plugin_wheels.choose_wheel(x86_only, Target("3.12", "arm64")) is None
    reason = plugin_wheels.why_no_wheel(x86_only, Target("3.12", "arm64"))
    assert reason.startswith("no wheel for linux aarch64 (arm64")
    musl_only = [PYDANTIC_CORE[2]]
    assert plugin_wheels.why_no_wheel(musl_only, t).startswith("no wheel for linux x86_64")


# ------------------------------------------------------------------------------ versions, env, refs

def test_daemon_version_from_the_real_compose_file():
    assert plugin_daemon.daemon_version_from_compose(FIXTURES / "docker-compose.yaml") == "0.5.2"
    assert plugins.DEFAULT_DAEMON_VERSION == "0.5.2"


def test_signing_env_per_daemon_version():
    env, warnings = plugins.signing_env("0.5.2-local", "/app/keys/site.pem")
    assert env == {"THIRD_PARTY_SIGNATURE_VERIFICATION_ENABLED": "true",
                   "THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS": "/app/keys/site.pem",
                   "FORCE_VERIFYING_SIGNATURE": "true"} and warnings == []
    assert plugins.signing_env("0.0.7", "/k")[0]["FORCE_VERIFYING_SIGNATURE"] == "true"
    env, warnings = plugins.signing_env("0.0.6", "/k")
    assert env == {"FORCE_VERIFYING_SIGNATURE": "false"}
    assert "cannot verify third-party signatures" in warnings[0]


def test_size_advice_against_the_real_env_defaults():
    env = plugins.project_limits(FIXTURES)
    assert env["PLUGIN_MAX_PACKAGE_SIZE"] == "52428800" and env["NGINX_CLIENT_MAX_BODY_SIZE"] == "100M"
    assert plugins.size_advice(12 << 20, 11 << 20, env) == []
    advice = plugins.size_advice(60 << 20, 58 << 20, env)
    assert len(advice) == 1 and advice[0].startswith(f"PLUGIN_MAX_PACKAGE_SIZE={61 << 20}")
    advice = plugins.size_advice(130 << 20, 120 << 20, env)
    assert [a.split("=")[0] for a in advice] == ["PLUGIN_MAX_PACKAGE_SIZE", "NGINX_CLIENT_MAX_BODY_SIZE"]
    assert advice[1].startswith("NGINX_CLIENT_MAX_BODY_SIZE=122M")


def test_parse_ref_and_marketplace_url(tmp_path, monkeypatch):
    monkeypatch.delenv(plugin_common.MARKETPLACE_ENV, raising=False)
    ref = plugins.parse_ref("langgenius/openai:0.2.7")
    assert (ref.kind, ref.author, ref.name, ref.version) == ("marketplace", "langgenius", "openai", "0.2.7")
    assert ref.download_url() == "https://marketplace.dify.ai/api/v1/plugins/langgenius/openai/0.2.7/download"
    monkeypatch.setenv(plugin_common.MARKETPLACE_ENV, "http://mirror.local/")
    assert ref.download_url().startswith("http://mirror.local/api/v1/")
    assert ref.download_url("http://cli:8080").startswith("http://cli:8080/api/v1/")     # option beats env
    assert plugins.parse_ref("https://github.com/a/b/releases/download/v1/x.difypkg").kind == "url"
    local = tmp_path / "x.difypkg"
    local.write_bytes(b"")
    assert plugins.parse_ref(str(local)).kind == "file"
    with pytest.raises(PluginError, match="neither an existing .difypkg"):
        plugins.parse_ref(str(tmp_path / "missing.difypkg"))


def test_dry_run_plan_changes_nothing(tmp_path):
    rows = plugins.plan(["langgenius/openai:0.2.7"], tmp_path / "out", cache_dir=tmp_path / "cache")
    assert rows[0]["download"].endswith("/langgenius/openai/0.2.7/download")
    assert "--python-platform x86_64-manylinux_2_39" in rows[0]["resolve"]
    assert list(tmp_path.iterdir()) == []


def _fake_python(path: Path, says: str) -> str:
    path.write_text(f"#!/bin/sh\necho '{says}'\n")
    path.chmod(0o755)
    return str(path)


def test_target_python_is_found_by_version_and_machine(tmp_path, monkeypatch):
    """$DIFY_AIRGAP_TARGET_PYTHON may list several interpreters: the first of the target's version AND machine
    wins (an aarch64 one on an x86_64 box runs under qemu-user); one that cannot run is passed over."""
    x86 = _fake_python(tmp_path / "x86", "3.12 x86_64")
    arm = _fake_python(tmp_path / "arm", "3.12 aarch64")
    old = _fake_python(tmp_path / "old", "3.11 aarch64")
    cannot_run = tmp_path / "noexec"
    cannot_run.write_text("#!/bin/sh\necho 3.12 aarch64\n")       # not executable: PermissionError
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    monkeypatch.setenv(plugin_common.TARGET_PYTHON_ENV, ":".join([str(cannot_run), old, x86, arm]))
    assert plugins.find_target_python("3.12", "aarch64") == arm
    assert plugins.find_target_python("3.12", "x86_64") == x86
    assert plugins.find_target_python("3.11", "x86_64") is None
    # the dry run says whether the proof will be the daemon's own command in the target's venv
    [row] = plugins.plan(["langgenius/openai:0.2.7"], tmp_path / "out", arch="arm64", cache_dir=tmp_path / "c")
    assert row["proof_exact"] and row["proof"][0].endswith(f"uv venv .venv --python {arm}")
    monkeypatch.setenv(plugin_common.TARGET_PYTHON_ENV, x86)
    [row] = plugins.plan(["langgenius/openai:0.2.7"], tmp_path / "out", arch="arm64", cache_dir=tmp_path / "c")
    assert not row["proof_exact"] and "--python-platform aarch64-manylinux_2_39" in row["proof"][-1]


def test_plugin_verify_task(tmp_path, keypair):
    from invoke import Context, Exit

    import tasks

    signed = plugin_sign.write_package(tmp_path / "s.difypkg", EXAMPLE[:2],
                                       sign_key=plugin_sign.load_private_key(keypair[0]))
    tasks.plugin_verify(Context(), str(signed.path), public_key=[str(keypair[1])])
    unsigned = plugin_sign.write_package(tmp_path / "u.difypkg", EXAMPLE[:2])
    with pytest.raises(Exit):
        tasks.plugin_verify(Context(), str(unsigned.path), public_key=[str(keypair[1])])
    with pytest.raises(Exit, match="RSA PUBLIC KEY"):
        pkix = tmp_path / "pkix.pem"
        from cryptography.hazmat.primitives import serialization

        pkix.write_bytes(plugin_sign.load_private_key(keypair[0]).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        tasks.plugin_verify(Context(), str(signed.path), public_key=[str(pkix)])


# ------------------------------------------------------------------ daemon install rules (DAEMON_RULES)

LOCKED = {"pyproject.toml", "uv.lock", "requirements.txt"}


@pytest.mark.parametrize("version, files, settings, file, argv", [
    # 0.5.2: requirements.txt only, pip verbose by default (PIP_VERBOSE=true)
    ("0.5.2", LOCKED, {}, "requirements.txt", ["pip", "install", "-r", "requirements.txt", "-vvv"]),
    ("0.5.2", {"requirements.txt"}, {"PIP_MIRROR_URL": "http://m/simple", "PIP_EXTRA_ARGS": "--offline  -q"},
     "requirements.txt", ["pip", "install", "-i", "http://m/simple", "-r", "requirements.txt", "-vvv",
                          "--offline", "", "-q"]),          # split on single spaces up to 0.5.4
    ("0.5.3", LOCKED, {}, "pyproject.toml", ["sync", "--no-dev", "-v"]),            # no --frozen yet
    ("0.5.5", LOCKED, {"PIP_VERBOSE": "false"}, "pyproject.toml", ["sync", "--no-dev", "--frozen"]),
    ("0.6.1", {"pyproject.toml"}, {}, "pyproject.toml", ["sync", "--no-dev", "-v"]),
    ("0.6.1", LOCKED, {"PIP_EXTRA_ARGS": "--offline  --frozen"}, "pyproject.toml",
     ["sync", "--no-dev", "--frozen", "-v", "--offline"]),  # whitespace split, --frozen not doubled
    ("0.6.1", LOCKED, {"PLUGIN_IGNORE_UV_LOCK": "true"}, "pyproject.toml", ["sync", "--no-dev", "-v"]),
    ("0.5.7", LOCKED, {"PLUGIN_IGNORE_UV_LOCK": "true"}, "pyproject.toml",   # setting arrives in 0.5.8
     ["sync", "--no-dev", "--frozen", "-v"]),
    # 0.6.1 still syncs with a mirror; 0.6.3 then prefers requirements.txt
    ("0.6.1", LOCKED, {"PIP_MIRROR_URL": "http://m/simple"}, "pyproject.toml",
     ["sync", "--no-dev", "--frozen", "-i", "http://m/simple", "-v"]),
    ("0.6.3", LOCKED, {"PIP_MIRROR_URL": "http://m/simple"}, "requirements.txt",
     ["pip", "install", "-i", "http://m/simple", "-r", "requirements.txt", "-vvv"]),
    ("0.6.3", {"pyproject.toml", "uv.lock"}, {"PIP_MIRROR_URL": "http://m/simple"}, "pyproject.toml",
     ["sync", "--no-dev", "--frozen", "-i", "http://m/simple", "-v"]),
    ("0.6.10", LOCKED, {}, "pyproject.toml", ["sync", "--no-dev", "--frozen", "-v"]),
    ("0.7.0", {"requirements.txt"}, {}, "requirements.txt", ["pip", "install", "-r", "requirements.txt", "-vvv"]),
])
def test_daemon_install_command_per_version(version, files, settings, file, argv):
    install = plugins.daemon_install(version, files, settings, environ={})
    assert (install.file, install.argv) == (file, argv)
    assert install.frozen == ("--frozen" in argv)
    assert install.rule.covers(version) or version == "0.7.0"
    assert install.command == "uv " + " ".join(shlex.quote(a) for a in argv)


def test_daemon_rules_table_is_contiguous_and_cites_its_source():
    rules = plugin_daemon.DAEMON_RULES
    assert rules[0].first == "0.0.0" and rules[-1].last == plugin_daemon.NEWEST_DAEMON_READ
    for a, b in zip(rules, rules[1:]):
        assert plugin_daemon._version(a.last) < plugin_daemon._version(b.first)
        assert not any(a.covers(v) and b.covers(v) for v in (a.last, b.first))
    for rule in rules:
        assert rule.source.startswith("langgenius/dify-plugin-daemon internal/core/local_runtime/"
                                      "setup_python_environment.go@")
    assert [plugins.daemon_rule(v).first for v in ("0.5.2", "0.5.4", "0.6.1", "0.6.3", "0.6.7", "0.9.1")] == \
        ["0.0.0", "0.5.4", "0.5.9", "0.6.3", "0.6.4", "0.6.4"]
    assert plugins.daemon_rule("0.6.1").cache == "shared" and plugins.daemon_rule("0.5.2").cache == ""
    assert not plugin_daemon.daemon_reads_pyproject("0.5.2") and plugin_daemon.daemon_reads_pyproject("0.5.3")


def test_daemon_install_env_and_notes():
    environ = {"SSL_CERT_FILE": "/etc/ca.pem", "HOME": "/root", "UV_INDEX_URL": "http://x"}
    assert plugins.daemon_install("0.6.3", {"requirements.txt"}, {}, environ).env == {}
    assert plugins.daemon_install("0.6.4", {"requirements.txt"}, {}, environ).env == {"SSL_CERT_FILE": "/etc/ca.pem"}
    auto = plugins.daemon_install("0.6.3", {"requirements.txt"}, {}, {}).notes
    assert any("PIP_MIRROR_AUTO_DETECT" in n for n in auto)
    assert plugins.daemon_install("0.6.3", {"requirements.txt"}, {"PIP_MIRROR_AUTO_DETECT": "false"}, {}).notes == []
    assert plugins.daemon_install("0.6.1", {"requirements.txt"}, {}, {}).notes == []
    with pytest.raises(PluginError, match="needs requirements.txt"):
        plugins.daemon_install("0.5.2", {"pyproject.toml"})
    described = plugins.daemon_install("0.9.0", {"pyproject.toml"}, {}, {}).describe()
    assert "newer than 0.6.10" in described and "`uv sync --no-dev -v`" in described


def test_lock_remote_sources_and_dependency_groups():
    remote = ('version = 1\n[[package]]\nname = "six"\nversion = "1.17.0"\n'
              'source = { registry = "https://pypi.org/simple" }\n'
              'wheels = [{ url = "https://files.pythonhosted.org/six.whl", hash = "sha256:00" }]\n')
    local = ('version = 1\n[[package]]\nname = "six"\nversion = "1.17.0"\nsource = { registry = "wheels" }\n'
             'wheels = [{ path = "six-1.17.0-py2.py3-none-any.whl", hash = "sha256:00" }]\n'
             '[[package]]\nname = "demo"\nversion = "0.1"\nsource = { virtual = "." }\n')
    assert plugins.lock_remote_sources(remote) == ["six==1.17.0 (registry=https://pypi.org/simple)"]
    assert plugins.lock_remote_sources(local) == []
    git = '[[package]]\nname = "x"\nversion = "1"\nsource = { git = "https://github.com/a/x" }\n'
    assert plugins.lock_remote_sources(git)[0].startswith("x==1 (git=")
    text = ('[project]\nname = "p"\n\n[dependency-groups]\ndev = [\n    "pytest>=8",\n]\n\n'
            '[build-system]\nrequires = ["hatchling"]\n')
    out, stripped = plugins.strip_dependency_groups(text)
    assert stripped and "pytest" not in out and "[build-system]" in out and out.startswith('[project]\nname = "p"')
    assert plugins.strip_dependency_groups(out) == (out, False)


@pytest.mark.parametrize("target, names", [
    (Target("3.12", "amd64"), ["uvloop", "bar", "odd", "undecided"]),
    (Target("3.10", "arm64"), ["uvloop", "onarm", "tomli", "bar", "odd", "undecided"]),
])
def test_the_exact_pins_checked_one_by_one_are_those_whose_marker_holds_on_the_daemon(tmp_path, target, names):
    """When uv cannot resolve (an sdist-only pin), the pins are checked one by one: a Windows-only or
    other-Python pin is not the daemon's and must not be reported as lacking a wheel."""
    req = tmp_path / "requirements.txt"
    req.write_text("pywin32==306 ; sys_platform == 'win32'\n"
                   "uvloop==0.19.0; python_version >= '3.8'\n"
                   "onarm==1.0 ; platform_machine == 'aarch64'\n"
                   "tomli==2.0.1 ; python_version < '3.11'  # a comment\n"
                   "bar[x]==2\n"
                   "odd==1 ; this is not a marker\n"
                   "undecided==1 ; python_version ~= '3'\n"
                   "-r other.txt\nloose>=1\n")
    assert [p.name for p in plugin_wheels._exact_pins(req, target)] == names
