"""HTTP and model-server probes: one GET from this host or from inside a container, judged as a :class:`Check`.

:func:`http_get` / :func:`container_get` never raise: an :class:`HttpOutcome` says what the request came to
(ok, connection refused, timeout, host unreachable, HTTP error); :func:`judge` turns it into a
:class:`Check` (transport error first, then the payload, through a validator that raises
:class:`WrongPayload`). On top: Ollama and vLLM (OpenAI-compatible) servers from this host
(:func:`check_ollama`, :func:`check_vllm`), and as Dify reaches them, from the api container through its
SSRF proxy (:func:`check_through_proxy`). :class:`Check` and :class:`CheckReport` are the result types
every check of ``invoke check`` returns (:mod:`scripts.host.check` adds the deployment's checks).
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from scripts.core.console import redact, register_secret, table
from scripts.engine.client import Engine

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


def preview(text: str, limit: int = BODY_PREVIEW) -> str:
    """``text`` on one line, cut at ``limit`` characters: what a message shows of a body or an output."""
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
        return Check(name, FAIL, f"cannot reach {_host_port(outcome.url)}{where}: {preview(outcome.error)}",
                     hint or "check the host name (DNS) and the route to it")
    if outcome.kind == "http_error":
        body = preview(outcome.body) or preview(outcome.error)
        status = outcome.status if outcome.status is not None else "error"
        return Check(name, FAIL, f"HTTP {status} from {target}" + (f": {body}" if body else ""),
                     _http_hint(outcome.status) or hint)
    if outcome.kind != "ok":
        return Check(name, FAIL, f"request to {target} failed: {preview(outcome.error)}", hint)
    try:
        data = json.loads(outcome.body)
    except ValueError:
        return Check(name, FAIL, f"wrong payload from {target}: expected JSON, got {preview(outcome.body)!r}",
                     hint or "is this URL the right service (not a proxy or a login page)?")
    try:
        status, detail, extra_hint = validate(data)
    except WrongPayload as exc:
        return Check(name, FAIL, f"wrong payload from {target}: expected {exc}; got {preview(outcome.body)}",
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
    return Check(name, FAIL, f"{url} could not be fetched {via}: {preview(output) or f'exit {returncode}'}",
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


def tcp_argv(host: str, port: int, timeout: float) -> list[str]:
    """``sh -c`` opening a TCP connection to ``host:port`` from inside a container: python3 (Dify's api image),
    else bash's /dev/tcp, else busybox nc (exit 0: connected; a refused one fails at once, an unanswered one after
    ``timeout``)."""
    t = str(max(1, round(timeout)))
    script = ('if command -v python3 >/dev/null 2>&1; then exec python3 -c "import socket, sys; '
              'socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3])).close()" "$1" "$2" "$3"; '
              'fi; if [ -n "$(bash -c \'echo $BASH_VERSION\' 2>/dev/null)" ]; then '  # busybox calls ash "bash" too
              'exec timeout "$3" bash -c \'exec 3<>"/dev/tcp/$1/$2"\' '
              'sh "$1" "$2"; fi; '
              # busybox nc has no -z and waits for the server after connecting: still there once its connect
              # timeout has passed means connected
              'nc -w "$3" "$1" "$2" </dev/null >/dev/null 2>&1 & pid=$!; sleep "$(( $3 + 1 ))"; '
              'if kill -0 "$pid" 2>/dev/null; then kill "$pid"; exit 0; fi; wait "$pid"')
    return ["sh", "-c", script, "sh", host, str(port), t]


def check_tcp(engine: Engine, container: str, name: str, host: str, port: int,
              timeout: float = DEFAULT_TIMEOUT) -> Check:
    """Can the api container open a connection to an external service (the site's database, redis...)?"""
    res = engine.probe(["exec", container, *tcp_argv(host, port, timeout)], timeout=timeout + 30)
    if res.ok:
        return Check(name, PASS, f"{host}:{port} accepts connections from the api container")
    reason = preview(f"{res.stdout}\n{res.stderr}".strip().splitlines()[-1] if (res.stdout + res.stderr).strip()
                     else f"exit {res.returncode}")
    if res.returncode in (124, 143):
        reason = f"no answer within {timeout:g}s"
    return Check(name, FAIL, f"cannot connect to {host}:{port} from the api container: {reason}",
                 f"is the server up and listening on {port}, and does a firewall between this host and {host} let "
                 f"it through? (the address comes from .env / your site file)")

