"""The transfer sheet: every component a bundle carries into the closed network, for the people who review it.

Reviewers of what enters a closed network (보안성 검토, 반입 심사) ask for a list of every component with its version
and digest. The manifest holds all of it; this module turns it into

- ``TRANSFER.md``: a bilingual (English / 한국어) sheet to attach to an import request: the bundle digest and signer
  first (what the receiving side checks), then every image, wheel, plugin and archive part with sizes and hashes;
- ``sbom.cdx.json``: the same components as a CycloneDX 1.6 SBOM (cyclonedx-python-lib), which scanners read;
- the same data as one JSON document (``inspect --format json``).

``invoke bundle`` writes the two files BESIDE the bundle (``NAME.TRANSFER.md``, ``NAME.sbom.cdx.json``): inside, they
would have to be listed in the manifest whose digest they print. ``invoke inspect --format md|json|cdx`` prints them
for any bundle, directory or archive, from its manifest alone.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import uuid
from pathlib import Path

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from scripts.bundle.manifest import MANIFEST, SIGNATURE
from scripts.core.console import human_size
from scripts.core.files import write_file_atomic
from scripts.engine.savetap import hub_short

FORMATS = ("text", "md", "json", "cdx")
MD_SUFFIX, CDX_SUFFIX = ".TRANSFER.md", ".sbom.cdx.json"
PROPERTY = "dify-airgap"  # the namespace of our CycloneDX properties


def sheet(manifest: dict, name: str, digest: str, signed: bool, signer: str | None = None,
          carried: str | None = None) -> dict:
    """The components of the bundle ``name`` (the directory name), as one plain dict (``--format json``).

    ``signer``: the fingerprint of the key that signed (known at bundle time, or when a configured key verified
    the signature); None with ``signed`` means signed, signer not checked here. ``carried``: what crosses the gap
    (``NAME``, ``NAME.tar`` or ``NAME.tar.part-000``), the path the receiving side verifies."""
    hashes = {e["path"]: e for e in manifest.get("files", [])}
    wheels = []
    for file in manifest.get("wheels", []):
        entry = hashes.get(f"wheels/{file}", {})
        try:
            project, version, _, _ = parse_wheel_filename(file)
            project, version = str(project), str(version)
        except InvalidWheelFilename:
            project, version = file, ""
        wheels.append({"name": project, "version": version, "file": file, "sha256": entry.get("sha256", ""),
                       "size": entry.get("size", 0)})
    plugins = [{"identifier": p["identifier"], "file": p["path"], "sha256": p.get("sha256", ""),
                "size": p.get("size", 0), "signed": bool(p.get("signed"))} for p in manifest.get("plugins", [])]
    images = [{"ref": i["ref"], "id": i.get("id"), "config_id": i.get("config_id") or i.get("id"),
               "repo_digest": i.get("repo_digest"), "size": i.get("size", 0),
               "platform": f"{i.get('os', 'linux')}/{i.get('architecture', '')}", "services": i.get("services", [])}
              for i in manifest.get("images", [])]
    archive = manifest.get("image_archive", {})
    return {
        "bundle": name, "carried": carried or name,
        "dify_version": manifest.get("dify_version"), "platform": manifest.get("platform"),
        "created": manifest.get("created"), "toolkit_version": manifest.get("toolkit_version"),
        "runtime": manifest.get("runtime"), "digest": digest, "signed": signed, "signer": signer,
        "images": images, "wheels": wheels, "plugins": plugins,
        "archive": {"compression": archive.get("compression"), "size": archive.get("size", 0),
                    "uncompressed_size": archive.get("uncompressed_size", 0),
                    "parts": [{"file": p["path"], "sha256": p.get("sha256", ""), "size": p.get("size", 0)}
                              for p in archive.get("parts", [])]},
        "files": len(manifest.get("files", [])),
    }


def _md_table(headers: list[str], rows: list[list[object]]) -> str:
    def cell(value: object) -> str:
        return str("" if value is None else value).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _signature_line(data: dict) -> str:
    if not data["signed"]:
        return f"no / 없음 ({SIGNATURE} absent: check the digest instead / 다이제스트로 확인)"
    if data["signer"]:
        return f"yes / 있음, key / 키 `{data['signer']}`"
    return (f"yes / 있음 ({SIGNATURE}; verify with the site's public key / 기관 공개키로 확인: "
            f"`invoke verify BUNDLE --public-key KEY.pem`)")


def render_head(data: dict) -> str:
    """The lines ``inspect`` adds under its text: the digest and the signature (plain, English)."""
    signed = ("no" if not data["signed"] else f"yes, key {data['signer']}" if data["signer"]
              else "yes (signer not checked: pass --public-key)")
    return f"digest: {data['digest']}\nsigned: {signed}"


def render_md(data: dict) -> str:
    """``TRANSFER.md``: English and Korean side by side, every component with its version and hash."""
    archive = data["archive"]
    out = [
        f"# Transfer sheet / 반입 자료 — Dify {data['dify_version']} ({data['platform']})",
        "",
        _md_table(["Item / 항목", "Value / 값"], [
            ["Bundle / 번들", f"`{data['bundle']}`"],
            ["Bundle digest / 번들 다이제스트", f"`{data['digest']}`"],
            ["Signature / 서명", _signature_line(data)],
            ["Dify version / Dify 버전", data["dify_version"]],
            ["Platform / 플랫폼", data["platform"]],
            ["Made / 생성", f"{data['created']}, dify-airgap {data['toolkit_version']} ({data['runtime']})"],
            ["Images / 이미지", f"{len(data['images'])}, {human_size(archive['size'])} {archive['compression']} in "
                              f"{len(archive['parts'])} part(s) / 파트, {human_size(archive['uncompressed_size'])} "
                              f"unpacked / 압축 해제 시"],
            ["Wheels / 휠", len(data["wheels"])],
            ["Plugins / 플러그인", len(data["plugins"])],
            ["Files in the manifest / 매니페스트의 파일", data["files"]],
        ]),
        "",
        "## How to check / 확인 방법",
        "",
        f"The digest is the SHA-256 of the bundle's `{MANIFEST}`, which pins every file below; the receiving side "
        f"runs / 받는 쪽에서 실행:",
        "",
        f"    invoke verify {data['carried']} --expect-digest {data['digest']}",
        "",
        ("and every part alone / 파트별 확인: `sha256sum -c " + f"{data['bundle']}.tar.SHA256SUMS`."
         if ".tar" in data["carried"] else
         f"and every file alone / 파일별 확인: `cd {data['bundle']} && sha256sum -c SHA256SUMS`."),
        "",
        f"## Container images / 컨테이너 이미지 ({len(data['images'])})",
        "",
        "Image ID: what `docker image inspect` showed on the build host / 빌드 호스트의 이미지 ID; config digest: what "
        "the image is called after `load` / 로드 후 이미지 ID.",
        "",
        _md_table(["Image / 이미지", "Image ID", "Config digest", "Registry digest / 레지스트리 다이제스트",
                   "Size / 크기", "Platform / 플랫폼", "Services / 서비스"],
                  [[f"`{i['ref']}`", f"`{i['id']}`", f"`{i['config_id']}`",
                    f"`{i['repo_digest']}`" if i["repo_digest"] else "— (built locally / 로컬 빌드)",
                    human_size(i["size"]), i["platform"], ", ".join(i["services"])] for i in data["images"]]),
        "",
        f"## Python wheels / 파이썬 휠 ({len(data['wheels'])})",
        "",
        "The toolkit and its dependencies, installed offline on the target / 대상 서버에서 오프라인 설치.",
        "",
        _md_table(["Package / 패키지", "Version / 버전", "File / 파일", "SHA-256", "Size / 크기"],
                  [[w["name"], w["version"], f"`{w['file']}`", f"`{w['sha256']}`", human_size(w["size"])]
                   for w in data["wheels"]]),
        "",
    ]
    if data["plugins"]:
        out += [f"## Plugins / 플러그인 ({len(data['plugins'])})", "",
                _md_table(["Plugin / 플러그인", "File / 파일", "SHA-256", "Size / 크기", "Signed / 서명"],
                          [[f"`{p['identifier']}`", f"`{p['file']}`", f"`{p['sha256']}`", human_size(p["size"]),
                            "yes / 있음" if p["signed"] else "no / 없음"] for p in data["plugins"]]), ""]
    out += ["## Image archive parts / 이미지 아카이브 파트", "",
            _md_table(["File / 파일", "SHA-256", "Size / 크기"],
                      [[f"`{p['file']}`", f"`{p['sha256']}`", human_size(p["size"])] for p in archive["parts"]]),
            "", f"Written by dify-airgap {data['toolkit_version']} from the bundle's manifest / "
                f"번들 매니페스트로 작성.", ""]
    return "\n".join(out)


def _image_purl(ref: str) -> PackageURL:
    """``pkg:docker/NAMESPACE/NAME@TAG?repository_url=HOST`` (Docker Hub names without ``docker.io/library``)."""
    short = hub_short(ref)
    if "@" in short:  # pinned by digest: the digest is the version
        path, _, tag = short.partition("@")
    else:
        path, _, tag = short.rpartition(":") if ":" in short.rsplit("/", 1)[-1] else (short, "", "latest")
    first = path.split("/", 1)[0]
    registry = first if "/" in path and ("." in first or ":" in first or first == "localhost") else "docker.io"
    if registry != "docker.io":
        path = path.split("/", 1)[1]
    namespace, _, name = path.rpartition("/")
    return PackageURL(type="docker", namespace=namespace or None, name=name, version=tag,
                      qualifiers={"repository_url": registry})


def _sha256(value: str | None) -> list[HashType]:
    hexpart = str(value or "").removeprefix("sha256:")
    return [HashType(alg=HashAlgorithm.SHA_256, content=hexpart)] if len(hexpart) == 64 else []


def render_cdx(data: dict) -> str:
    """``sbom.cdx.json``: CycloneDX 1.6 JSON, reproducible (serial number from the bundle digest, timestamp =
    the bundle's creation). Images are ``container`` components hashed by config digest, wheels ``library``
    (``pkg:pypi``), plugins ``application``; our own facts are ``dify-airgap:*`` properties."""
    bom = Bom(serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"dify-airgap:{data['digest']}"))
    with contextlib.suppress(ValueError):
        bom.metadata.timestamp = _dt.datetime.fromisoformat(str(data["created"]))
    root = Component(type=ComponentType.APPLICATION, name="dify", version=str(data["dify_version"]),
                     bom_ref=f"bundle:{data['bundle']}", hashes=_sha256(data["digest"]),
                     properties=[Property(name=f"{PROPERTY}:bundle", value=data["bundle"]),
                                 Property(name=f"{PROPERTY}:bundle-digest", value=data["digest"]),
                                 Property(name=f"{PROPERTY}:platform", value=str(data["platform"])),
                                 Property(name=f"{PROPERTY}:signed", value=str(data["signed"]).lower()),
                                 *([Property(name=f"{PROPERTY}:signer", value=data["signer"])]
                                   if data["signer"] else [])])
    bom.metadata.component = root
    parts = []
    for image in data["images"]:
        props = [Property(name=f"{PROPERTY}:size", value=str(image["size"])),
                 Property(name=f"{PROPERTY}:platform", value=image["platform"]),
                 Property(name=f"{PROPERTY}:image-id", value=str(image["id"])),
                 Property(name=f"{PROPERTY}:services", value=", ".join(image["services"]))]
        if image["repo_digest"]:
            props.append(Property(name=f"{PROPERTY}:repo-digest", value=image["repo_digest"]))
        purl = _image_purl(image["ref"])
        parts.append(Component(type=ComponentType.CONTAINER, name=image["ref"], version=purl.version,
                               bom_ref=f"image:{image['ref']}", purl=purl,
                               hashes=_sha256(image["config_id"]), properties=props))
    for wheel in data["wheels"]:
        parts.append(Component(type=ComponentType.LIBRARY, name=wheel["name"], version=wheel["version"] or None,
                               bom_ref=f"wheel:{wheel['file']}", hashes=_sha256(wheel["sha256"]),
                               purl=PackageURL(type="pypi", name=wheel["name"].lower(),
                                               version=wheel["version"] or None),
                               properties=[Property(name=f"{PROPERTY}:file", value=wheel["file"])]))
    for plugin in data["plugins"]:
        name, _, version = plugin["identifier"].partition(":")
        parts.append(Component(type=ComponentType.APPLICATION, name=name, version=version.split("@")[0] or None,
                               bom_ref=f"plugin:{plugin['identifier']}", hashes=_sha256(plugin["sha256"]),
                               properties=[Property(name=f"{PROPERTY}:file", value=plugin["file"]),
                                           Property(name=f"{PROPERTY}:signed", value=str(plugin["signed"]).lower())]))
    for part in parts:
        bom.components.add(part)
    bom.register_dependency(root, parts)
    return JsonV1Dot6(bom).output_as_string(indent=2) + "\n"


def write_beside(final: Path, data: dict) -> list[Path]:
    """``NAME.TRANSFER.md`` and ``NAME.sbom.cdx.json`` next to the bundle directory ``final`` (replaced each run:
    they are ours, derived from the manifest)."""
    written = []
    for suffix, text in ((MD_SUFFIX, render_md(data)), (CDX_SUFFIX, render_cdx(data))):
        path = final.parent / f"{final.name}{suffix}"
        write_file_atomic(path, text.encode("utf-8"))
        written.append(path)
    return written
