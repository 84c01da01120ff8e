"""`invoke check`: the sysadmin's final checklist for an installed Dify, as a command.

Each check is data (:class:`Check`: name, pass/warn/fail, detail, hint); :class:`CheckReport` renders
them as a table or JSON. Two halves:

- the deployment (:func:`check_deployment`, given a :class:`~scripts.dify.deployment.Deployment`): every
  service's container up (healthy where it has a healthcheck; one-shot ``init_permissions`` exited 0),
  every recorded image present, Dify's API ``/health`` asked from INSIDE the api container, the console
  API and the web UI through nginx on the published port, the plugin daemon's ``/health/check`` asked
  from the api container (the path Dify itself uses);
- model servers, with no deployment needed (:func:`check_ollama`, :func:`check_vllm`,
  :func:`check_http_json`): plain functions over real HTTP from this host.

Every request has a timeout, and a failure says which of these it was: connection refused, timeout,
host unreachable, HTTP error (code and the start of the body), wrong payload (what was expected), or a
missing model (with the models that are there).
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from scripts.core.console import LOG, redact, register_secret, table
from scripts.dify import stack
from scripts.dify.deployment import Deployment
from scripts.engine.client import Engine, compose_args
from scripts.engine.images import local_ref, missing_images

PASS, WARN, FAIL = "pass", "warn", "fail"
DEFAULT_TIMEOUT = 10.0
#: How much of an unexpected body a message shows.
BODY_PREVIEW = 200


# --- results ---------------------------------------------------------------------------------------

@dataclass
class Check:
    name: str
    status: str  # pass | warn | fail
    detail: str = ""
    hint: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAIL


@dataclass
class CheckReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings do not fail the report)."""
        return not any(c.failed for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in (PASS, WARN, FAIL)}

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.failed]

    def by_name(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "counts": self.counts(), "checks": [asdict(c) for c in self.checks]}

    def render(self) -> str:
        rows = [(c.status.upper(), c.name, c.detail) for c in self.checks]
        lines = [table(["STATUS", "CHECK", "DETAIL"], rows)]
        hints = [c for c in self.checks if c.hint and c.status != PASS]
        if hints:
            lines.append("")
            lines += [f"{c.name}: {c.hint}" for c in hints]
        n = self.counts()
        lines.append("")
        lines.append(f"{n[PASS]} passed, {n[WARN]} warning(s), {n[FAIL]} failed"
                     + ("" if self.ok else " -- NOT ready"))
        return redact("\n".join(lines))


# --- HTTP: one outcome type for requests from this host and from inside a container -----------------

@dataclass(frozen=True)
class HttpOutcome:
    """What one GET came to. ``kind``: ok, refused, timeout, unreachable, http_error, error."""

    url: str
    kind: str
    status: int | None = None
    body: str = ""
    error: str = ""
    via: str = ""  # "" = from this host; else "inside CONTAINER"


class WrongPayload(Exception):
    """The body parsed but is not what the endpoint should answer; the message says what was expected."""


#: A validator gets the parsed JSON and returns (status, detail, hint), or raises WrongPayload.
Validator = Callable[[Any], "tuple[str, str, str]"]


def _preview(text: str, limit: int = BODY_PREVIEW) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit] + "..."


def _host_port(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, (socket.timeout, TimeoutError)) or "timed out" in str(exc).lower()


def http_get(url: str, timeout: float = DEFAULT_TIMEOUT, headers: Mapping[str, str] | None = None,
             verify_tls: bool = True) -> HttpOutcome:
    """GET ``url`` from this host. Never raises: the outcome says what happened.

    Proxies from the environment are NOT used: the servers checked are on the site's own network,
    and an ``http_proxy`` meant for a package mirror would otherwise answer for them.
    """
    handlers: list = [urllib.request.ProxyHandler({})]
    if not verify_tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, headers={"Accept": "application/json", **(headers or {})})
    try:
        with opener.open(request, timeout=timeout) as resp:
            body = resp.read(1 << 20).decode("utf-8", "replace")
            return HttpOutcome(url, "ok", resp.status, body)
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read(4096).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - the body of an error is a courtesy
            body = ""
        return HttpOutcome(url, "http_error", exc.code, body)
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ConnectionRefusedError):
            return HttpOutcome(url, "refused", error=str(reason))
        if isinstance(reason, (socket.timeout, TimeoutError)) or "timed out" in str(reason).lower():
            return HttpOutcome(url, "timeout", error=str(reason))
        if isinstance(reason, OSError):  # DNS (gaierror), no route to host, network unreachable
            return HttpOutcome(url, "unreachable", error=str(reason))
        return HttpOutcome(url, "error", error=str(reason))
    except ConnectionRefusedError as exc:
        return HttpOutcome(url, "refused", error=str(exc))
    except (socket.timeout, TimeoutError) as exc:
        return HttpOutcome(url, "timeout", error=str(exc) or "timed out")
    except (OSError, ValueError) as exc:  # reset connections, bad URLs, http.client errors
        if _is_timeout(exc):
            return HttpOutcome(url, "timeout", error=str(exc))
        return HttpOutcome(url, "error", error=f"{type(exc).__name__}: {exc}")


_HTTP_CODE = re.compile(r"error:?\s*(?:HTTP/[\d.]+\s+)?(\d{3})\b")


def _classify_fetch_failure(url: str, returncode: int, stderr: str, via: str) -> HttpOutcome:
    """A failed curl/wget inside a container, by curl's exit code or curl's/busybox wget's wording."""
    text = stderr.strip()
    low = text.lower()
    code = _HTTP_CODE.search(text)
    if returncode == 22 or "returned error" in low or (code and "error" in low):
        return HttpOutcome(url, "http_error", int(code.group(1)) if code else None, error=text, via=via)
    if returncode == 7 or "connection refused" in low:
        return HttpOutcome(url, "refused", error=text, via=via)
    if returncode in (28, 124, 143) or "timed out" in low or "timeout" in low:
        return HttpOutcome(url, "timeout", error=text, via=via)
    if returncode == 6 or "bad address" in low or "resolve" in low or "no route" in low:
        return HttpOutcome(url, "unreachable", error=text, via=via)
    return HttpOutcome(url, "error", error=text or f"exit code {returncode}", via=via)


def container_get(engine: Engine, container: str, url: str, timeout: float = DEFAULT_TIMEOUT) -> HttpOutcome:
    """GET ``url`` from inside ``container`` (its network view: service names resolve).

    Uses ``curl`` (Dify's api and plugin-daemon images have it), else busybox ``wget``. Never raises.
    """
    via = f"inside {container}"
    t = str(max(1, round(timeout)))
    tools = (("curl", ["curl", "-fsS", "-m", t, url]),
             ("wget", ["timeout", t, "wget", "-q", "-O", "-", url]))
    last = None
    for tool, argv in tools:
        res = engine.probe(["exec", container, *argv], timeout=timeout + 30)
        if res.ok:
            return HttpOutcome(url, "ok", 200, res.stdout, via=via)
        said = f"{res.stderr}\n{res.stdout}".strip()  # docker 20.10 prints exec errors on stdout
        if res.returncode in (126, 127) or (tool in said and "not found" in said):
            last = said
            continue  # this tool is not in the image (curl exits 126/127 never itself): try the next
        outcome = _classify_fetch_failure(url, res.returncode, res.stderr, via)
        if outcome.kind == "http_error" and tool == "curl":  # fetch the body too, for the message
            again = engine.probe(["exec", container, "curl", "-sS", "-m", t, url], timeout=timeout + 30)
            if again.ok:
                outcome = HttpOutcome(url, "http_error", outcome.status, again.stdout, outcome.error, via)
        return outcome
    return HttpOutcome(url, "error", error=f"neither curl nor wget can run in {container}: {last}", via=via)


def judge(name: str, outcome: HttpOutcome, validate: Validator, timeout: float, hint: str = "") -> Check:
    """Turn an outcome into a Check: transport errors first, then the payload."""
    where = f" ({outcome.via})" if outcome.via else ""
    target = f"{outcome.url}{where}"
    if outcome.kind == "refused":
        return Check(name, FAIL, f"connection refused: nothing listens on {_host_port(outcome.url)}{where}",
                     hint or "is the service running and the URL/port right?")
    if outcome.kind == "timeout":
        return Check(name, FAIL, f"timeout: no answer from {target} within {timeout:g}s",
                     hint or "the server is overloaded, or a firewall drops the packets; raise --timeout "
                             "if it is just slow")
    if outcome.kind == "unreachable":
        return Check(name, FAIL, f"cannot reach {_host_port(outcome.url)}{where}: {_preview(outcome.error)}",
                     hint or "check the host name (DNS) and the route to it")
    if outcome.kind == "http_error":
        body = _preview(outcome.body) or _preview(outcome.error)
        status = outcome.status if outcome.status is not None else "error"
        return Check(name, FAIL, f"HTTP {status} from {target}" + (f": {body}" if body else ""),
                     _http_hint(outcome.status) or hint)
    if outcome.kind != "ok":
        return Check(name, FAIL, f"request to {target} failed: {_preview(outcome.error)}", hint)
    try:
        data = json.loads(outcome.body)
    except ValueError:
        return Check(name, FAIL, f"wrong payload from {target}: expected JSON, got {_preview(outcome.body)!r}",
                     hint or "is this URL the right service (not a proxy or a login page)?")
    try:
        status, detail, extra_hint = validate(data)
    except WrongPayload as exc:
        return Check(name, FAIL, f"wrong payload from {target}: expected {exc}; got {_preview(outcome.body)}",
                     hint or "is this URL the right service?")
    return Check(name, status, detail, extra_hint)


def _http_hint(status: int | None) -> str:
    if status in (401, 403):
        return "the server wants credentials (an API key) or refused the one given"
    if status == 404:
        return "wrong path or base URL: is this the right service and API version?"
    if status is not None and status >= 500:
        return "the server itself failed: read its log"
    return ""


def check_http_json(name: str, url: str, validate: Validator, timeout: float = DEFAULT_TIMEOUT,
                    headers: Mapping[str, str] | None = None, hint: str = "", verify_tls: bool = True) -> Check:
    """GET ``url`` from this host and judge the JSON answer with ``validate``."""
    return judge(name, http_get(url, timeout, headers, verify_tls=verify_tls), validate, timeout, hint)


# --- model servers -------------------------------------------------------------------------------------

def _base(url: str, suffix: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    return url[: -len(suffix)] if suffix and url.endswith(suffix) else url


def ollama_base(url: str) -> str:
    """The Ollama server's base URL whether given as host:port, .../api or .../api/tags."""
    return _base(_base(url, "/api/tags"), "/api")


def vllm_base(url: str) -> str:
    """The OpenAI-compatible server's base URL whether given as host:port, .../v1 or .../v1/models."""
    return _base(_base(url, "/v1/models"), "/v1")


def _with_latest(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _localhost_hint(url: str) -> str:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host in ("localhost", "127.0.0.1", "::1"):
        return (f"{url} answers on this host, but inside Dify's containers localhost is the container: "
                "give Dify this host's IP address instead")
    return ""


def ollama_validator(model: str | None, url: str = "") -> Validator:
    def validate(data: Any) -> tuple[str, str, str]:
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            raise WrongPayload('{"models": [{"name": ...}, ...]} (Ollama\'s /api/tags)')
        names = [str(m.get("name") or m.get("model") or "") for m in data["models"] if isinstance(m, dict)]
        names = [n for n in names if n]
        hint = _localhost_hint(url)
        if not model:
            status = PASS if names else WARN
            detail = f"{len(names)} model(s): {', '.join(names)}" if names else "Ollama answers but has no models"
            return status, detail, hint or ("" if names else "load a model into Ollama (ollama create / copy "
                                                            "~/.ollama/models from a connected machine)")
        if _with_latest(model) in {_with_latest(n) for n in names}:
            return PASS, f"model {model} present ({len(names)} model(s) in all)", hint
        return (FAIL, f"model {model} not found; the server has: {', '.join(names) or '(no models)'}",
                "copy the model into Ollama on this network (ollama create FROM a GGUF, or the "
                "~/.ollama/models directory from a connected machine), or fix --ollama-model")
    return validate


def check_ollama(url: str, model: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Check:
    """Ollama answers ``GET /api/tags``; with ``model``, it is among ``models[].name`` (":latest" optional)."""
    base = ollama_base(url)
    return check_http_json("ollama", f"{base}/api/tags", ollama_validator(model, base), timeout,
                           hint="is `ollama serve` running, and listening on this address (OLLAMA_HOST=0.0.0.0)?")


def vllm_validator(model: str | None, url: str = "") -> Validator:
    def validate(data: Any) -> tuple[str, str, str]:
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise WrongPayload('{"object": "list", "data": [{"id": ...}, ...]} (OpenAI-style /v1/models)')
        ids = [str(m.get("id")) for m in data["data"] if isinstance(m, dict) and m.get("id")]
        hint = _localhost_hint(url)
        if not model:
            return (PASS if ids else WARN, f"{len(ids)} model(s): {', '.join(ids)}" if ids else "no models served",
                    hint)
        if model in ids:
            return PASS, f"model {model} served", hint
        return (FAIL, f"model {model} not served; the server has: {', '.join(ids) or '(no models)'}",
                "use one of these ids in Dify (vLLM serves --served-model-name, else the model path), "
                "or fix --vllm-model")
    return validate


def check_vllm(url: str, api_key: str | None = None, model: str | None = None,
               timeout: float = DEFAULT_TIMEOUT) -> Check:
    """A vLLM (OpenAI-compatible) server answers ``GET /v1/models``; with ``model``, it is in ``data[].id``.

    The API key is sent as ``Authorization: Bearer KEY`` and never printed.
    """
    headers = {}
    if api_key:
        register_secret(api_key)
        headers["Authorization"] = f"Bearer {api_key}"
    base = vllm_base(url)
    outcome = http_get(f"{base}/v1/models", timeout, headers)
    check = judge("vllm", outcome, vllm_validator(model, base), timeout,
                  hint="is vLLM running, and listening on this address (--host 0.0.0.0)?")
    if outcome.kind == "http_error" and outcome.status == 401:
        check.hint = ("the API key was rejected: pass the key vLLM was started with (--api-key / "
                      "VLLM_API_KEY)" if api_key else
                      "vLLM was started with an API key: pass it with --vllm-api-key")
    return check


# --- model servers as Dify reaches them: from the api container, through the SSRF proxy ----------------

SSRF_HINT = ("allow it: `invoke env --model-server URL` (or SSRF_PROXY_ALLOW_PRIVATE_IPS / "
             "SSRF_PROXY_ALLOW_PRIVATE_DOMAINS in your site file), re-run install, so ssrf_proxy restarts with it")


def proxied_argv(url: str, proxy: str, timeout: float) -> list[str]:
    """``sh -c`` fetching ``url`` through ``proxy``, printing the response headers (curl, else busybox wget)."""
    t = str(max(1, round(timeout)))
    script = ('if command -v curl >/dev/null 2>&1; then exec curl -sS -o /dev/null -D - -m "$3" -x "$2" "$1"; fi; '
              'http_proxy="$2" https_proxy="$2" exec timeout "$3" wget -S -O /dev/null "$1" 2>&1')
    return ["sh", "-c", script, "sh", url, proxy, t]


def judge_proxied(name: str, url: str, proxy: str, returncode: int, output: str, timeout: float) -> Check:
    """What the api container got through the SSRF proxy: refused by squid, unreachable, or an answer."""
    low = output.lower()
    codes = re.findall(r"http/[\d.]+\s+(\d{3})", low)
    status = int(codes[-1]) if codes else None
    squid_error = re.search(r"x-squid-error:\s*(\S+)", low)
    # An answer squid made itself says "Server: squid/x.y" (curl shows it). busybox wget shows NO header of an
    # error answer, only "server returned error: HTTP/1.1 403 Forbidden" (seen on real squid 5.7): there a
    # 403 / 50x is taken as the proxy's, as a model server's list endpoint rarely answers those itself.
    from_squid = bool(re.search(r"^\s*server:\s*squid", low, re.MULTILINE)) or "server returned error" in low
    via = f"from the api container through {proxy}"
    if squid_error and squid_error.group(1).upper() == "ERR_ACCESS_DENIED" or (status == 403 and from_squid):
        return Check(name, FAIL, f"the SSRF proxy refused {url} ({via}): Dify cannot reach this server", SSRF_HINT)
    if squid_error or (status in (502, 503, 504) and from_squid):
        return Check(name, FAIL, f"the SSRF proxy could not connect to {_host_port(url)} "
                                 f"({squid_error.group(1) if squid_error else status}; {via})",
                     "the proxy is allowed but the server does not answer from the Docker host's network: "
                     "check its address, port and firewall")
    if status is not None:
        return Check(name, PASS, f"{url} answers HTTP {status} {via}")
    if returncode in (28, 124, 143) or "timed out" in low:
        return Check(name, FAIL, f"timeout: no answer for {url} within {timeout:g}s ({via})",
                     "is the proxy (ssrf_proxy) running? `invoke check` lists its container above")
    return Check(name, FAIL, f"{url} could not be fetched {via}: {_preview(output) or f'exit {returncode}'}",
                 "is ssrf_proxy running, and the URL right?")


def check_through_proxy(engine: Engine, container: str, name: str, url: str, proxy: str,
                        timeout: float = DEFAULT_TIMEOUT) -> Check:
    res = engine.probe(["exec", container, *proxied_argv(url, proxy, timeout)], timeout=timeout + 30)
    return judge_proxied(name, url, proxy, res.returncode, f"{res.stdout}\n{res.stderr}", timeout)


def model_urls(ollama_url: str | None, vllm_url: str | None) -> list[tuple[str, str]]:
    """(check name, URL Dify calls) for the model servers asked for."""
    out = []
    if ollama_url:
        out.append(("ollama via dify's proxy", f"{ollama_base(ollama_url)}/api/tags"))
    if vllm_url:
        out.append(("vllm via dify's proxy", f"{vllm_base(vllm_url)}/v1/models"))
    return out


# --- the deployment ------------------------------------------------------------------------------------

def _env_values(deployment: Deployment) -> dict[str, str]:
    """The deployment's .env as compose reads it (empty when there is none)."""
    return stack.env_values(deployment.env_file if deployment.env_file.is_file() else None)


def _compose_cmd(engine: Engine, deployment: Deployment, args: Sequence[str]) -> str:
    """The compose command a sysadmin can paste (cd into the project directory first)."""
    provider = engine.find_compose()
    if provider is None:
        return f"{engine.runtime} compose " + shlex.join(list(args))
    argv = list(provider.argv) + compose_args(provider, project_dir=".", files=deployment.compose_files,
                                              env_file=".env", profiles=deployment.profiles,
                                              project_name=deployment.project_name) + list(args)
    return f"cd {shlex.quote(str(deployment.project_dir))} && {shlex.join(argv)}"


def _expected_services(deployment: Deployment, values: Mapping[str, str]) -> dict:
    """{service: ServiceSpec} of the deployment's active services, from its compose files."""
    specs = stack.load_specs(deployment.project_dir, deployment.compose_files or ["docker-compose.yaml"], values)
    return stack.active_services(specs, deployment.profiles or stack.active_profiles(values))


def service_checks(engine: Engine, deployment: Deployment, current: Mapping, specs: Mapping) -> list[Check]:
    """One check per active service: running, healthy where it has a healthcheck, one-shots exited 0.

    Podman 4.3 without systemd never runs healthchecks itself: here ``podman healthcheck run`` runs
    them once for every running container that has one.
    """
    checks = []
    if not current:
        return [Check("services", FAIL, f"no containers for compose project {deployment.project_name!r}",
                      f"start it: {_compose_cmd(engine, deployment, ['up', '-d'])}")]
    for name in sorted(set(specs) | set(current)):
        spec, st = specs.get(name), current.get(name)
        label = f"service {name}"
        if st is None:
            checks.append(Check(label, FAIL, "no container (never created, or removed)",
                                f"start it: {_compose_cmd(engine, deployment, ['up', '-d', name])}"))
            continue
        logs = f"`{engine.runtime} logs --tail 50 {st.container}` shows why"
        exit_code = int(st.exit_code or 0) if str(st.exit_code or "0").lstrip("-").isdigit() else st.exit_code
        if spec is not None and spec.one_shot:
            if st.state == "exited" and exit_code == 0:
                checks.append(Check(label, PASS, "one-shot, exited 0"))
            elif st.state == "exited":
                checks.append(Check(label, FAIL, f"one-shot, exited {exit_code}", logs))
            else:
                checks.append(Check(label, WARN, f"one-shot, still {st.state}", "it should finish and exit 0"))
            continue
        if st.state != "running":
            detail = f"{st.state}" + (f" (exit code {exit_code})" if st.state == "exited" else "") + ", not running"
            checks.append(Check(label, FAIL, detail,
                                f"{logs}; start it: {_compose_cmd(engine, deployment, ['up', '-d', name])}"))
            continue
        health = st.health
        if spec is not None and spec.healthcheck and health != "healthy" and engine.is_podman:
            res = engine.probe(["healthcheck", "run", st.container], timeout=90)
            health = "healthy" if res.ok else "unhealthy"
            if not res.ok:
                output = _preview(res.stdout + " " + res.stderr)
                checks.append(Check(label, FAIL, f"running, healthcheck fails: {output}", logs))
                continue
        if health == "healthy":
            checks.append(Check(label, PASS, "running, healthy"))
        elif health == "unhealthy":
            checks.append(Check(label, FAIL, "running, unhealthy" + _last_health_output(engine, st.container), logs))
        elif health == "starting" or (spec is not None and spec.healthcheck):
            checks.append(Check(label, WARN, f"running, healthcheck {health or 'not run yet'}",
                                "re-run `invoke check` in a minute"))
        else:
            checks.append(Check(label, PASS, "running"))
    return checks


def _last_health_output(engine: Engine, container: str) -> str:
    res = engine.probe(["inspect", "--format", "{{json .State.Health}}", container])
    try:
        log = (json.loads(res.stdout) or {}).get("Log") or [] if res.ok else []
    except ValueError:
        return ""
    return f": {_preview(log[-1].get('Output', ''), 120)}" if log else ""


def image_check(engine: Engine, deployment: Deployment) -> Check:
    """Every image the deployment records is present in the engine, named with its services if not."""
    images = deployment.images or []
    if not images:
        return Check("images", WARN, "the deployment records no images", "re-run `invoke install` to record them")
    local = {img["ref"]: local_ref(engine, img["ref"]) for img in images}
    missing = set(missing_images(engine, list(local.values())))
    gone = [img for img in images if local[img["ref"]] in missing]
    if not gone:
        return Check("images", PASS, f"all {len(images)} images present")
    detail = "; ".join(f"{img['ref']} (service: {', '.join(img.get('services') or []) or '?'})" for img in gone)
    return Check("images", FAIL, f"missing {len(gone)} of {len(images)}: {detail}",
                 f"load the bundle's images again (`{engine.runtime} load`, or re-run `invoke install BUNDLE`)")


def dify_health_validator(expected_version: str = "") -> Validator:
    def validate(data: Any) -> tuple[str, str, str]:
        if not (isinstance(data, dict) and data.get("status") == "ok" and isinstance(data.get("pid"), int)
                and isinstance(data.get("version"), str)):
            raise WrongPayload('{"pid": <int>, "status": "ok", "version": "<Dify version>"}')
        detail = f"status ok, version {data['version']}, pid {data['pid']}"
        if expected_version and data["version"] != expected_version:
            return WARN, detail, f"the deployment records Dify {expected_version}: was an image replaced?"
        return PASS, detail, ""
    return validate


def _pong(data: Any) -> tuple[str, str, str]:
    if data != {"result": "pong"}:
        raise WrongPayload('{"result": "pong"}')
    return PASS, "pong", ""


def _daemon_health(data: Any) -> tuple[str, str, str]:
    if not isinstance(data, dict) or data.get("status") != "ok":
        raise WrongPayload('{"status": "ok", ...}')
    extra = ", ".join(f"{k} {data[k]}" for k in ("version", "pool_status") if isinstance(data.get(k), (str, int)))
    return PASS, "status ok" + (f", {extra}" if extra else ""), ""


def nginx_base_url(values: Mapping[str, str]) -> tuple[str, bool]:
    """(base URL of nginx as published on this host, whether it is https)."""
    if str(values.get("NGINX_HTTPS_ENABLED", "false")).lower() == "true":
        return f"https://127.0.0.1:{values.get('EXPOSE_NGINX_SSL_PORT') or 443}", True
    return f"http://127.0.0.1:{values.get('EXPOSE_NGINX_PORT') or 80}", False


def web_check(base: str, timeout: float, verify_tls: bool) -> Check:
    """The web UI answers through nginx (any 2xx page, after redirects)."""
    outcome = http_get(f"{base}/", timeout, {"Accept": "text/html"}, verify_tls=verify_tls)
    if outcome.kind == "ok":
        return Check("web via nginx", PASS, f"HTTP {outcome.status} at {base}/")
    return judge("web via nginx", outcome, lambda data: (PASS, "", ""), timeout,
                 hint="is the nginx (and web) service up, and EXPOSE_NGINX_PORT in .env the port published?")


def websocket_check(base: str, timeout: float, verify_tls: bool) -> Check:
    """Dify 1.14+'s collaboration websocket (api_websocket) answers a socket.io handshake through nginx."""
    url = f"{base}/socket.io/?EIO=4&transport=polling"
    outcome = http_get(url, timeout, {"Accept": "*/*"}, verify_tls=verify_tls)
    hint = ("nginx resolves api_websocket at request time through the `resolver` of nginx/conf.d/"
            "default.conf.template (127.0.0.11 = Docker's DNS; under podman compose-overrides/podman.yaml points "
            "it at aardvark-dns): is api_websocket running?")
    if outcome.kind == "ok" and outcome.body.startswith("0{"):
        return Check("websocket via nginx", PASS, f"socket.io handshake at {base}/socket.io/")
    if outcome.kind == "ok":
        return Check("websocket via nginx", FAIL, f"{url} answered, but not a socket.io handshake: "
                                                  f"{_preview(outcome.body)!r}", hint)
    return judge("websocket via nginx", outcome, lambda data: (PASS, "", ""), timeout, hint=hint)


def check_deployment(deployment: Deployment, engine: Engine | None = None, *,
                     timeout: float = DEFAULT_TIMEOUT, nginx_url: str | None = None,
                     models: Sequence[tuple[str, str]] = ()) -> list[Check]:
    """The checks of an installed Dify: services, images, API health, console and web via nginx, plugin daemon.

    ``nginx_url`` overrides the base URL nginx is reached at (default: 127.0.0.1 and the published
    port from the deployment's .env).
    """
    engine = engine or deployment.engine()
    values = _env_values(deployment)
    specs = _expected_services(deployment, values)
    current = stack.states(engine, deployment.project_name,
                           lambda args, **kw: deployment.compose(engine, args, **kw))
    checks = [Check("deployment", PASS, f"{deployment.prefix}: {engine.runtime}, compose project "
                                        f"{deployment.project_name}" + (f", Dify {deployment.dify_version}"
                                                                        if deployment.dify_version else ""))]
    checks += service_checks(engine, deployment, current, specs)
    checks.append(image_check(engine, deployment))

    api = current.get("api")
    api_up = api is not None and api.state == "running"
    port = values.get("DIFY_PORT") or "5001"
    if api_up:
        outcome = container_get(engine, api.container, f"http://localhost:{port}/health", timeout)
        checks.append(judge("dify api /health", outcome, dify_health_validator(deployment.dify_version), timeout,
                            hint=f"`{engine.runtime} logs --tail 50 {api.container}` shows why"))
    else:
        checks.append(Check("dify api /health", FAIL, "cannot ask: the api container is not running",
                            "see `service api` above"))

    base, https = (nginx_url.rstrip("/"), nginx_url.startswith("https")) if nginx_url else nginx_base_url(values)
    checks.append(check_http_json("console api via nginx", f"{base}/console/api/ping", _pong, timeout,
                                  hint="is nginx up, and EXPOSE_NGINX_PORT in .env the published port? "
                                       "(a firewall in front of this host does not matter here: this is 127.0.0.1)",
                                  verify_tls=not https))
    checks.append(web_check(base, timeout, verify_tls=not https))
    if "api_websocket" in specs:
        checks.append(websocket_check(base, timeout, verify_tls=not https))

    daemon = current.get("plugin_daemon")
    daemon_url = (values.get("PLUGIN_DAEMON_URL") or "http://plugin_daemon:5002").rstrip("/") + "/health/check"
    if "plugin_daemon" not in specs and daemon is None:
        pass  # a Dify without the plugin daemon (older releases): nothing to check
    elif daemon is None or daemon.state != "running":
        checks.append(Check("plugin daemon /health/check", FAIL,
                            f"cannot ask: the plugin_daemon container is {daemon.state if daemon else 'missing'}",
                            "see `service plugin_daemon` above"))
    else:
        via = api.container if api_up else daemon.container
        url = daemon_url if api_up else f"http://localhost:{values.get('PLUGIN_DAEMON_PORT') or 5002}/health/check"
        checks.append(judge("plugin daemon /health/check", container_get(engine, via, url, timeout), _daemon_health,
                            timeout, hint=f"`{engine.runtime} logs --tail 50 {daemon.container}` shows why"))
    proxy = values.get("SSRF_PROXY_HTTP_URL") or "http://ssrf_proxy:3128"
    for name, url in models:  # as Dify calls them: from the api container, through the SSRF proxy
        checks.append(check_through_proxy(engine, api.container, name, url, proxy, timeout) if api_up else
                      Check(name, FAIL, "cannot ask: the api container is not running", "see `service api` above"))
    return checks


def run_checks(deployment: Deployment | None = None, *, engine: Engine | None = None,
               ollama_url: str | None = None, ollama_model: str | None = None,
               vllm_url: str | None = None, vllm_api_key: str | None = None, vllm_model: str | None = None,
               timeout: float = DEFAULT_TIMEOUT, nginx_url: str | None = None, wait: float = 0,
               interval: float = 5.0) -> CheckReport:
    """Everything `invoke check` runs: the deployment's checks (if given), then the model servers asked for.

    ``wait`` > 0: run them again every ``interval`` seconds while any fails, for up to ``wait`` seconds
    (right after an install or a reboot, a stack needs a moment: on Podman 4.3 the first lookups of
    service names can go unanswered for a while). The last report is returned either way.
    """
    if vllm_api_key:
        register_secret(vllm_api_key)
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        report = _run_once(deployment, engine, ollama_url, ollama_model, vllm_url, vllm_api_key, vllm_model,
                           timeout, nginx_url)
        left = deadline - time.monotonic()
        if report.ok or left <= 0:
            return report
        LOG.info("check: %d failing (%s); again in %.0fs, for up to %.0fs more", len(report.failed()),
                 ", ".join(c.name for c in report.failed()), min(interval, left), left)
        time.sleep(min(interval, left))


def _run_once(deployment, engine, ollama_url, ollama_model, vllm_url, vllm_api_key, vllm_model, timeout,
              nginx_url) -> CheckReport:
    report = CheckReport()
    if deployment is not None:
        report.checks += check_deployment(deployment, engine, timeout=timeout, nginx_url=nginx_url,
                                          models=model_urls(ollama_url, vllm_url))
    if ollama_url:
        report.checks.append(check_ollama(ollama_url, ollama_model, timeout))
    if vllm_url:
        report.checks.append(check_vllm(vllm_url, vllm_api_key, vllm_model, timeout))
    return report
