"""scripts.bundle.signature on a tiny bundle made here: signing, digest, verify/open with a trust policy, for the
directory AND the archive form, and the by-hand openssl check of docs/security.md (no engine, no network)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from invoke import Config, Context, Exit

from scripts.bundle import archive, build, signature
from scripts.bundle import manifest as mf
from scripts.core.errors import AirgapError
from scripts.plugins import sign
from tests.unit.bundle.bundles import NAME, forge

CHUNK = 1024
PART = "images.tar.zst"


def _problems(report: mf.VerifyReport) -> dict[str, str]:
    return {p.path: p.kind for p in report.problems}


def _form(bundle: Path, form: str, out: Path) -> Path:
    """The path `invoke verify` gets: the directory, the archive, or the first of its parts."""
    if form == "directory":
        return bundle
    out.mkdir(exist_ok=True)
    written = archive.write_archive(bundle, out, CHUNK if form == "parts" else None)
    return out / written["parts"][0]["path"]


FORMS = ["directory", "archive", "parts"]


# --- signing --------------------------------------------------------------------------------------------

def test_sign_bundle_writes_pkcs1v15_sha256_over_the_exact_manifest_bytes(bundle: Path, site_keys):
    private, public = site_keys
    fp = signature.sign_bundle(bundle, private)
    sig = (bundle / mf.SIGNATURE).read_bytes()
    assert len(sig) == 256  # raw RSA signature of a 2048-bit key: no header, no encoding
    key = sign.load_public_key(public)
    key.verify(sig, (bundle / mf.MANIFEST).read_bytes(), padding.PKCS1v15(), hashes.SHA256())
    assert fp == signature.fingerprint(key) and fp.startswith("sha256:") and len(fp) == 7 + 64
    inode = (bundle / mf.SIGNATURE).stat().st_ino
    assert signature.sign_bundle(bundle, private) == fp  # deterministic: a re-run leaves the file alone
    assert (bundle / mf.SIGNATURE).stat().st_ino == inode and (bundle / mf.SIGNATURE).read_bytes() == sig
    assert mf.verify(bundle).ok  # the signature is one of the bundle's own files


def test_sign_bundle_refuses_a_public_or_missing_key(bundle: Path, site_keys, tmp_path: Path):
    with pytest.raises(sign.SignatureError, match="RSA PRIVATE KEY"):
        signature.sign_bundle(bundle, site_keys[1])
    with pytest.raises(sign.SignatureError, match="cannot read key"):
        signature.sign_bundle(bundle, tmp_path / "nope.pem")
    assert not (bundle / mf.SIGNATURE).exists()


# --- an intact signed bundle passes; a forged one fails -----------------------------------------------------

@pytest.mark.parametrize("form", FORMS)
def test_intact_signed_bundle_passes_key_and_digest(bundle: Path, site_keys, tmp_path: Path, form: str):
    private, public = site_keys
    fp = signature.sign_bundle(bundle, private)
    digest = signature.bundle_digest(bundle)
    path = _form(bundle, form, tmp_path / "out")
    report = signature.verify(path, trust=signature.policy([str(public)], digest))
    assert report.ok, report.render()
    assert (report.digest, report.signed, report.signer, report.signer_key) == (digest, True, fp, str(public))
    assert f"digest: {digest}" in report.render() and fp in report.render()
    data = report.to_dict()
    assert data["ok"] and data["digest"] == digest and data["signer"] == fp


@pytest.mark.parametrize("form", FORMS)
def test_forged_bundle_fails_public_key_and_expect_digest(bundle: Path, site_keys, tmp_path: Path, form: str):
    private, public = site_keys
    signature.sign_bundle(bundle, private)
    announced = signature.bundle_digest(bundle)
    forge(bundle, PART, b"\x28\xb5\x2f\xfd" + b"evil" * 500)  # part changed, manifest.json and SHA256SUMS redone
    path = _form(bundle, form, tmp_path / "out")
    assert signature.verify(path).ok  # every hash matches: only the signature or the digest can tell

    report = signature.verify(path, trust=signature.policy([str(public)]))
    assert _problems(report) == {mf.SIGNATURE: "bad signature"}
    assert str(public) in report.problems[0].detail and report.signer is None
    assert "do NOT install" in report.render()
    assert f"verifies with none of: {public}" in report.render() and report.to_dict()["keys"] == [str(public)]

    report = signature.verify(path, trust=signature.policy(expect_digest=announced))
    assert _problems(report) == {mf.MANIFEST: "digest"}
    forged = signature.bundle_digest(path)
    assert forged != announced and forged in report.problems[0].detail and announced in report.problems[0].detail


@pytest.mark.parametrize("form", FORMS)
def test_a_forger_dropping_the_signature_is_refused_as_unsigned(bundle: Path, site_keys, tmp_path: Path, form: str):
    forge(bundle, PART, b"evil")
    path = _form(bundle, form, tmp_path / "out")
    report = signature.verify(path, trust=signature.policy([str(site_keys[1])]))
    assert _problems(report) == {mf.SIGNATURE: "unsigned"}
    assert "--public-key" in report.problems[0].detail and str(site_keys[1]) in report.problems[0].detail
    assert not report.signed and "signed: no" in report.render()


def test_bad_signature_names_every_key_tried_and_any_key_verifying_is_enough(bundle: Path, site_keys, other_keys):
    signature.sign_bundle(bundle, other_keys[0])
    report = signature.verify(bundle, trust=signature.policy([str(site_keys[1])]))
    assert _problems(report) == {mf.SIGNATURE: "bad signature"} and str(site_keys[1]) in report.render()
    both = signature.policy([str(site_keys[1]), str(other_keys[1])])
    report = signature.verify(bundle, trust=both)
    assert report.ok and report.signer_key == str(other_keys[1])


def test_a_signed_bundle_checked_without_keys_says_so(bundle: Path, site_keys):
    signature.sign_bundle(bundle, site_keys[0])
    report = signature.verify(bundle)
    assert report.ok and report.signed and report.signer is None
    assert "not checked (pass --public-key" in report.render()


def test_a_signature_replaced_by_a_symlink_is_refused(bundle: Path, site_keys, tmp_path: Path):
    signature.sign_bundle(bundle, site_keys[0])
    elsewhere = tmp_path / "sig"
    shutil.move(bundle / mf.SIGNATURE, elsewhere)
    (bundle / mf.SIGNATURE).symlink_to(elsewhere)
    report = signature.verify(bundle, trust=signature.policy([str(site_keys[1])]))
    assert {(p.path, p.kind) for p in report.problems} == {(mf.SIGNATURE, "unsigned"), (mf.SIGNATURE, "unexpected")}


# --- the digest ------------------------------------------------------------------------------------------

def test_the_digest_bundle_prints_is_what_verify_computes_for_both_forms(bundle: Path, site_keys, tmp_path: Path):
    plan = SimpleNamespace(archive=True, chunk_size=CHUNK, sign_key=str(site_keys[0]), to_dict=dict)
    signature.sign_bundle(bundle, site_keys[0])
    first = _form(bundle, "parts", tmp_path / "out")
    done = build.done_dict(bundle, plan)
    text = build.render_done(done)
    assert f"archive: {bundle.parent / (archive.archive_name(bundle.name) + '.part-000')}" in text
    printed = text.splitlines()[-1]
    assert printed.startswith("digest: sha256:")
    digest = printed.split(" ", 1)[1]
    raw = (bundle / mf.MANIFEST).read_bytes()
    assert digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert digest == signature.bundle_digest(bundle) == signature.bundle_digest(first)
    assert digest == signature.verify(bundle).digest == signature.verify(first).digest
    assert digest == signature.verify(first, deep=False).digest  # the quick check reads the head too
    assert signature.fingerprint(sign.load_public_key(site_keys[1])) in text


def test_parse_digest_takes_what_bundle_printed_or_bare_hex():
    hexa = "ab" * 32
    assert signature.parse_digest(f"sha256:{hexa}") == signature.parse_digest(hexa.upper()) == f"sha256:{hexa}"
    for bad in ("", "sha256:abc", "md5:" + hexa, hexa + "0"):
        with pytest.raises(AirgapError, match="is not a digest"):
            signature.parse_digest(bad)


# --- the policy: option beats site configuration --------------------------------------------------------

def test_policy_public_key_option_beats_the_configured_keys():
    site = signature.policy([], None, ["/etc/dify-airgap/site.public.pem"])
    assert site.public_keys == ("/etc/dify-airgap/site.public.pem",) and site.requires_signature
    assert site.keys_from == "invoke.yaml airgap.bundle_public_keys"
    option = signature.policy(["k.pem"], None, ["/etc/dify-airgap/site.public.pem"])
    assert option.public_keys == ("k.pem",) and option.keys_from == "--public-key"
    assert signature.policy([], None, "one.pem").public_keys == ("one.pem",)
    assert not signature.policy().requires_signature and signature.policy().expect_digest is None


# --- open_verified: what install and push call first -------------------------------------------------------

@pytest.mark.parametrize("form", ["directory", "archive"])
def test_unsigned_bundle_is_refused_when_the_site_configured_keys(bundle: Path, site_keys, tmp_path: Path, form):
    path = _form(bundle, form, tmp_path / "out")
    site = signature.policy([], None, [str(site_keys[1])])
    with pytest.raises(AirgapError, match=r"not signed, but invoke.yaml airgap.bundle_public_keys demands"):
        signature.open_verified(path, site)
    assert not (tmp_path / "out" / NAME).exists()  # the archive was not unpacked


def test_open_verified_refuses_a_forged_archive_before_unpacking(bundle: Path, site_keys, tmp_path: Path):
    signature.sign_bundle(bundle, site_keys[0])
    forge(bundle, PART, b"evil")
    first = _form(bundle, "archive", tmp_path / "out")
    with pytest.raises(AirgapError, match="bad signature") as err:
        signature.open_verified(first, signature.policy([str(site_keys[1])]))
    assert "nothing was unpacked" in str(err.value)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{NAME}.tar", f"{NAME}.tar.SHA256SUMS"]


def test_open_verified_unpacks_a_signed_archive_with_its_signature(bundle: Path, site_keys, tmp_path: Path):
    signature.sign_bundle(bundle, site_keys[0])
    first = _form(bundle, "parts", tmp_path / "out")
    got = signature.open_verified(first, signature.policy([str(site_keys[1])], signature.bundle_digest(bundle)))
    assert got == tmp_path / "out" / NAME
    assert (got / mf.SIGNATURE).read_bytes() == (bundle / mf.SIGNATURE).read_bytes()
    assert signature.verify(got, trust=signature.policy([str(site_keys[1])])).ok


def test_open_verified_refuses_an_unlisted_file_by_name(bundle: Path):
    (bundle / "docker" / "docker-compose.override.yaml").write_text("services: {}\n")
    with pytest.raises(AirgapError, match=r"docker/docker-compose.override.yaml +unexpected"):
        signature.open_verified(bundle, signature.policy())


def test_open_verified_dry_run_of_an_archive_unpacks_nothing(bundle: Path, site_keys, tmp_path: Path):
    signature.sign_bundle(bundle, site_keys[0])
    first = _form(bundle, "archive", tmp_path / "out")
    got = signature.open_verified(first, signature.policy([str(site_keys[1])]), dry_run=True)
    assert got == first and not (tmp_path / "out" / NAME).exists()  # the archive itself: plan from planning_view


def test_a_dry_run_verifies_the_new_archive_not_an_older_unpack_of_the_same_name(bundle: Path, tmp_path: Path):
    """An earlier release's unpack beside the archive (same NAME, other manifest) is not what a dry run checks."""
    first = _form(bundle, "archive", tmp_path / "out")
    stale = signature.open_verified(first, signature.policy())            # a real run unpacks it
    assert stale == tmp_path / "out" / NAME and (stale / mf.MANIFEST).is_file()
    forge(bundle, "docker/.env.example", b"EXPOSE_NGINX_PORT=8080\n")    # the next bundle of that name
    first.unlink()
    newer = _form(bundle, "archive", tmp_path / "out")
    assert signature.open_verified(newer, signature.policy(), dry_run=True) == newer  # streamed, not the old dir
    (bundle / PART).write_bytes(b"damaged after its manifest was written")
    newer.unlink()
    damaged = _form(bundle, "archive", tmp_path / "out")
    with pytest.raises(AirgapError, match=rf"(?s)does not verify.*{PART} +truncated"):
        signature.open_verified(damaged, signature.policy(), dry_run=True)
    assert (stale / "docker" / ".env.example").read_bytes() == b"EXPOSE_NGINX_PORT=80\n", "a dry run changes nothing"


def test_a_signed_archive_holds_the_signature_second_then_the_small_folders(bundle: Path, site_keys,
                                                                            tmp_path: Path):
    signature.sign_bundle(bundle, site_keys[0])
    first = _form(bundle, "archive", tmp_path / "out")
    with tarfile.open(first) as tar:
        names = [m.name.split("/", 1)[1] for m in tar.getmembers()]
    assert names[:3] == [mf.MANIFEST, mf.SIGNATURE, mf.SUMS]
    small = [n for n in names if n.startswith(archive.PLAN_DIRS)]
    assert small and names[3:3 + len(small)] == small        # before the images: planning_view stops there
    assert archive.read_head(first)[3] == (bundle / mf.SIGNATURE).read_bytes()
    with archive.planning_view(first) as view:
        assert not (view / PART).exists() and (view / mf.MANIFEST).read_bytes() == (bundle / mf.MANIFEST).read_bytes()


# --- the verify task reads the site's keys from invoke's configuration ---------------------------------------

def test_verify_task_uses_the_site_keys_from_invoke_config(bundle: Path, site_keys, capsys):
    import tasks  # local: tasks.py is the top of the layers, imported only by the tests of its tasks

    site = Context(Config(overrides={"airgap": {"bundle_public_keys": [str(site_keys[1])]}}))
    with pytest.raises(Exit):
        tasks.verify(site, str(bundle))
    assert "invoke.yaml airgap.bundle_public_keys" in capsys.readouterr().out
    signature.sign_bundle(bundle, site_keys[0])
    tasks.verify(site, str(bundle), json_=True)
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] and data["signer_key"] == str(site_keys[1]) and data["digest"].startswith("sha256:")
    with pytest.raises(Exit):  # the option beats the configuration: another key, refused
        tasks.verify(site, str(bundle), public_key=[str(site_keys[1]) + ".missing"])


@pytest.mark.parametrize("form", FORMS)
def test_verify_task_refuses_a_forged_bundle_by_key_and_by_digest_in_every_form(bundle: Path, site_keys, tmp_path,
                                                                                 capsys, form: str):
    """What the operator runs: `invoke verify PATH --public-key PEM` and `--expect-digest sha256:...` each fail
    (exit 1, the problem named, one JSON document under --json) on a forged directory, archive or part set."""
    import tasks  # local: tasks.py is the top of the layers, imported only by the tests of its tasks

    signature.sign_bundle(bundle, site_keys[0])
    announced = signature.bundle_digest(bundle)
    forge(bundle, PART, b"\x28\xb5\x2f\xfd" + b"evil" * 500)
    path = str(_form(bundle, form, tmp_path / "out"))
    ctx = Context(Config())
    for option, problem in [({"public_key": [str(site_keys[1])]}, "bad signature"),
                            ({"expect_digest": announced}, "digest")]:
        with pytest.raises(Exit) as caught:
            tasks.verify(ctx, path, json_=True, **option)
        assert caught.value.code == 1
        data = json.loads(capsys.readouterr().out)
        assert not data["ok"] and problem in {p["kind"] for p in data["problems"]}, data


# --- the by-hand check of docs/security.md --------------------------------------------------------------

def _sh(script: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script], cwd=cwd, capture_output=True, text=True)


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is not installed")
def test_the_documented_openssl_commands_check_a_signed_manifest(bundle: Path, site_keys, tmp_path: Path):
    private, public = site_keys
    keys = tmp_path / "keys"
    keys.mkdir()
    shutil.copy(public, keys / "site.public.pem")
    fp = signature.sign_bundle(bundle, private)
    convert = _sh("openssl rsa -RSAPublicKey_in -in site.public.pem -pubout -out site.spki.pem", keys)
    assert convert.returncode == 0, convert.stderr
    assert (keys / "site.spki.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    check = f"openssl dgst -sha256 -verify {keys / 'site.spki.pem'} -signature manifest.json.sig manifest.json"
    res = _sh(check, bundle)
    assert res.returncode == 0 and res.stdout.strip() == "Verified OK", res.stdout + res.stderr
    printed = _sh("openssl rsa -RSAPublicKey_in -in site.public.pem -pubout -outform DER | sha256sum", keys)
    assert "sha256:" + printed.stdout.split()[0] == fp
    files = ("python3 -c 'import json; [print(f[\"sha256\"] + \"  \" + f[\"path\"]) "
             "for f in json.load(open(\"manifest.json\"))[\"files\"]]' | sha256sum -c --quiet -")
    res = _sh(files.replace("python3", sys.executable, 1), bundle)
    assert res.returncode == 0, res.stdout + res.stderr
    forge(bundle, PART, b"evil")  # hashes redone: sha256sum -c passes, the signature does not
    assert _sh(files.replace("python3", sys.executable, 1), bundle).returncode == 0
    res = _sh(check, bundle)
    assert res.returncode == 1 and "Verification failure" in res.stdout


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is not installed")
def test_the_documented_commands_for_the_archive_form(bundle: Path, site_keys, tmp_path: Path):
    private, public = site_keys
    signature.sign_bundle(bundle, private)
    out = tmp_path / "out"
    _form(bundle, "parts", out)
    shutil.copy(public, out / "site.public.pem")
    _sh("openssl rsa -RSAPublicKey_in -in site.public.pem -pubout -out site.spki.pem", out)
    res = _sh(f"cat {NAME}.tar.part-* | tar -xOf - {NAME}/manifest.json | sha256sum", out)
    assert "sha256:" + res.stdout.split()[0] == signature.bundle_digest(bundle)
    res = _sh(f"cat {NAME}.tar.part-* | tar -xf - {NAME}/manifest.json {NAME}/manifest.json.sig && "
              f"openssl dgst -sha256 -verify site.spki.pem -signature {NAME}/manifest.json.sig {NAME}/manifest.json",
              out)
    assert res.returncode == 0 and res.stdout.strip() == "Verified OK", res.stdout + res.stderr


# --- the archive's head --------------------------------------------------------------------------------------

def test_the_signature_is_the_archive_s_second_member_read_without_unpacking(bundle: Path, site_keys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    archive.write_archive(bundle, out)
    assert archive.read_head(out / f"{NAME}.tar")[3] is None
    signature.sign_bundle(bundle, site_keys[0])
    assert not archive.archive_up_to_date(bundle, out, None)  # same manifest, new signature: written again
    archive.ensure_archive(bundle, out)
    with tarfile.open(out / f"{NAME}.tar") as tar:
        names = tar.getnames()
    assert names[:3] == [f"{NAME}/{mf.MANIFEST}", f"{NAME}/{mf.SIGNATURE}", f"{NAME}/{mf.SUMS}"]
    _, root, raw, sig = archive.read_head(out / f"{NAME}.tar")
    assert (root, raw, sig) == (NAME, (bundle / mf.MANIFEST).read_bytes(), (bundle / mf.SIGNATURE).read_bytes())
    assert archive.archive_up_to_date(bundle, out, None)
