"""scripts/host/check.py and probes.py: HTTP checks against REAL servers on 127.0.0.1, failure wording, the report,
the task."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.core.console import emit
from scripts.dify.deployment import Deployment
from scripts.dify.stack import ServiceSpec, ServiceState
from scripts.engine.client import Engine, Result
from scripts.host import check, probes
from scripts.host.probes import FAIL, PASS, WARN, Check, CheckReport
from tests.support.httpstub import Reply, free_port, ollama_tags, requests_seen, serve, vllm_models

ROOT = Path(__file__).resolve().parents[3]


# --- Ollama ---------------------------------------------------------------------------------------

def test_ollama_lists_models_without_a_model_asked():
    with serve({"/api/tags": Reply(body=ollama_tags("llama3:latest", "qwen2.5:7b"))}) as url:
        c = probes.check_ollama(url)
    assert c.status == PASS and "llama3:latest" in c.detail and "qwen2.5:7b" in c.detail


@pytest.mark.parametrize("asked", ["llama3", "llama3:latest"])
def test_ollama_model_with_or_without_latest(asked):
    with serve({"/api/tags": Reply(body=ollama_tags("llama3:latest"))}) as url:
        assert probes.check_ollama(url, asked).status == PASS
    with serve({"/api/tags": Reply(body=ollama_tags("llama3"))}) as url:
        assert probes.check_ollama(url + "/", asked).status == PASS


def test_ollama_missing_model_lists_what_is_there():
    with serve({"/api/tags": Reply(body=ollama_tags("llama3:latest", "qwen2.5:7b"))}) as url:
        c = probes.check_ollama(url, "mistral")
    assert c.status == FAIL
    assert "model mistral not found" in c.detail and "llama3:latest, qwen2.5:7b" in c.detail
    assert "--ollama-model" in c.hint
    with serve({"/api/tags": Reply(body=ollama_tags("qwen2.5:7b"))}) as url:
        assert probes.check_ollama(url, "qwen2.5").status == FAIL  # a tag other than latest must match exactly


def test_ollama_with_no_models_warns():
    with serve({"/api/tags": Reply(body={"models": []})}) as url:
        c = probes.check_ollama(url)
    assert c.status == WARN and "no models" in c.detail


def test_connection_refused_says_so():
    port = free_port()
    c = probes.check_ollama(f"http://127.0.0.1:{port}", "llama3", timeout=2)
    assert c.status == FAIL
    assert c.detail == f"connection refused: nothing listens on 127.0.0.1:{port}"


def test_http_500_shows_code_and_body():
    with serve({"/api/tags": Reply(500, {"error": "model store corrupted"})}) as url:
        c = probes.check_ollama(url)
    assert c.status == FAIL
    assert c.detail.startswith(f"HTTP 500 from {url}/api/tags") and "model store corrupted" in c.detail
    assert "log" in c.hint


def test_wrong_payload_says_what_was_expected():
    with serve({"/api/tags": Reply(body={"tags": ["llama3"]})}) as url:
        c = probes.check_ollama(url)
    assert c.status == FAIL and "wrong payload" in c.detail
    assert '{"models": [{"name": ...}, ...]}' in c.detail and '"tags"' in c.detail


def test_not_json_is_a_wrong_payload():
    with serve({"/api/tags": Reply(body="<html>login</html>", content_type="text/html")}) as url:
        c = probes.check_ollama(url)
    assert c.status == FAIL and "expected JSON" in c.detail and "<html>login</html>" in c.detail


def test_timeout_is_bounded_and_named():
    with serve({"/api/tags": Reply(body=ollama_tags("llama3"), delay=5)}) as url:
        started = time.monotonic()
        c = probes.check_ollama(url, timeout=0.5)
        elapsed = time.monotonic() - started
    assert c.status == FAIL and c.detail.startswith("timeout: no answer from") and "within 0.5s" in c.detail
    assert elapsed < 3


def test_unresolvable_host_is_unreachable():
    c = probes.check_ollama("http://no-such-host.invalid:11434", timeout=3)
    assert c.status == FAIL and c.detail.startswith("cannot reach no-such-host.invalid:11434")


def test_localhost_url_passes_with_a_hint_for_dify():
    with serve({"/api/tags": Reply(body=ollama_tags("llama3"))}) as url:
        c = probes.check_ollama(url.replace("127.0.0.1", "localhost"))
    assert c.status == PASS and "host's IP" in c.hint


# --- vLLM -------------------------------------------------------------------------------------------

def test_vllm_models_and_model_id():
    with serve({"/v1/models": Reply(body=vllm_models("Qwen/Qwen2.5-7B-Instruct"))}) as url:
        assert probes.check_vllm(url).status == PASS
        assert probes.check_vllm(url + "/v1", model="Qwen/Qwen2.5-7B-Instruct").status == PASS
        missing = probes.check_vllm(url, model="qwen")
    assert missing.status == FAIL
    assert missing.detail == "model qwen not served; the server has: Qwen/Qwen2.5-7B-Instruct"


def test_vllm_api_key_required_and_never_printed(capsys):
    key = "sk-site-secret-4711"
    routes = {"/v1/models": Reply(body=vllm_models("llama"), bearer=key)}
    with serve(routes) as url:
        without = probes.check_vllm(url, model="llama")
        wrong = probes.check_vllm(url, api_key="sk-wrong-key-0000", model="llama")
        right = probes.check_vllm(url, api_key=key, model="llama")
    assert without.status == FAIL and without.detail.startswith("HTTP 401") and "--vllm-api-key" in without.hint
    assert wrong.status == FAIL and "rejected" in wrong.hint
    assert right.status == PASS
    report = CheckReport([without, wrong, right])
    assert key not in report.render() and key not in json.dumps(report.to_dict())
    emit(False, None, report.render)
    emit(True, report.to_dict())  # what `invoke check` prints, with and without --json
    assert key not in capsys.readouterr().out


def test_vllm_wrong_payload():
    with serve({"/v1/models": Reply(body={"models": ["llama"]})}) as url:
        c = probes.check_vllm(url)
    assert c.status == FAIL and '"data": [{"id": ...}' in c.detail


def test_check_http_json_with_headers_and_own_validator():
    def validate(data):
        if data.get("result") != "pong":
            raise probes.WrongPayload('{"result": "pong"}')
        return PASS, "pong", ""

    with serve({"/ping": Reply(body={"result": "pong"}), "/bad": Reply(body={"result": "ping"})}) as url:
        assert probes.check_http_json("ping", f"{url}/ping", validate).status == PASS
        bad = probes.check_http_json("ping", f"{url}/bad", validate)
    assert bad.status == FAIL and 'expected {"result": "pong"}' in bad.detail


def test_proxies_from_the_environment_are_not_used(monkeypatch):
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("no_proxy", "")
    with serve({"/api/tags": Reply(body=ollama_tags("llama3"))}) as url:
        assert probes.check_ollama(url).status == PASS


# --- Dify payloads ----------------------------------------------------------------------------------

def test_dify_health_shape():
    validate = check.dify_health_validator("1.11.3")
    assert validate({"pid": 7, "status": "ok", "version": "1.11.3"})[0] == PASS
    assert validate({"pid": 7, "status": "ok", "version": "1.10.0"})[0] == WARN
    for bad in ({"status": "ok"}, {"pid": "7", "status": "ok", "version": "1"}, ["ok"],
                {"pid": 7, "status": "degraded", "version": "1.11.3"}):
        with pytest.raises(probes.WrongPayload):
            validate(bad)


@pytest.mark.parametrize(("code", "stderr", "kind", "status"), [
    (7, "curl: (7) Failed to connect to localhost port 5001 after 0 ms: Couldn't connect to server", "refused", None),
    (28, "curl: (28) Operation timed out after 2001 milliseconds with 0 bytes received", "timeout", None),
    (22, "curl: (22) The requested URL returned error: 500", "http_error", 500),
    (6, "curl: (6) Could not resolve host: plugin_daemon", "unreachable", None),
    (1, "wget: can't connect to remote host (127.0.0.1): Connection refused", "refused", None),
    (1, "wget: server returned error: HTTP/1.1 502 Bad Gateway", "http_error", 502),
    (1, "wget: bad address 'plugin_daemon:5002'", "unreachable", None),
    (143, "", "timeout", None),
])
def test_in_container_failures_are_told_apart(code, stderr, kind, status):
    outcome = probes._classify_fetch_failure("http://x/health", code, stderr, "inside c")
    assert (outcome.kind, outcome.status) == (kind, status)


# --- services, images, the report ---------------------------------------------------------------------

def _engine(runtime: str = "docker", answers: dict | None = None) -> Engine:
    """An engine whose commands answer from ``answers`` (argv prefix -> Result); everything else fails."""
    answers = answers or {}

    def runner(argv, **kwargs):
        for prefix, (code, out) in answers.items():
            if tuple(argv[: len(prefix)]) == prefix:
                return Result(tuple(argv), code, out, "")
        return Result(tuple(argv), 1, "", "unknown")

    return Engine(runtime, runner=runner)


def _spec(name, healthcheck=False, one_shot=False):
    return ServiceSpec(name, f"img/{name}", [], healthcheck, one_shot, [])


def test_service_checks_name_each_service(tmp_path):
    dep = Deployment(prefix=tmp_path, runtime="docker", project_name="dify")
    specs = {"api": _spec("api"), "db": _spec("db", healthcheck=True), "init_permissions": _spec("init_permissions",
             one_shot=True), "plugin_daemon": _spec("plugin_daemon"), "redis": _spec("redis", healthcheck=True),
             "web": _spec("web")}
    current = {"api": ServiceState("api", "dify-api-1", "running", 0, ""),
               "db": ServiceState("db", "dify-db-1", "running", 0, "healthy"),
               "init_permissions": ServiceState("init_permissions", "dify-init-1", "exited", 0, ""),
               "plugin_daemon": ServiceState("plugin_daemon", "dify-plugin_daemon-1", "exited", 137, ""),
               "redis": ServiceState("redis", "dify-redis-1", "running", 0, "starting")}
    checks = {c.name: c for c in check.service_checks(_engine(), dep, current, specs)}
    assert checks["service api"].status == PASS
    assert checks["service db"].detail == "running, healthy"
    assert checks["service init_permissions"].status == PASS
    daemon = checks["service plugin_daemon"]
    assert daemon.status == FAIL and daemon.detail == "exited (exit code 137), not running"
    assert "docker logs --tail 50 dify-plugin_daemon-1" in daemon.hint and "up -d plugin_daemon" in daemon.hint
    assert checks["service redis"].status == WARN
    assert checks["service web"].status == FAIL and "no container" in checks["service web"].detail


def test_podman_healthchecks_are_run_by_the_check(tmp_path):
    dep = Deployment(prefix=tmp_path, runtime="podman")
    specs = {"db": _spec("db", healthcheck=True), "redis": _spec("redis", healthcheck=True)}
    current = {"db": ServiceState("db", "dify_db_1", "running", 0, "starting"),
               "redis": ServiceState("redis", "dify_redis_1", "running", 0, "")}
    engine = _engine("podman", {("podman", "healthcheck", "run", "dify_db_1"): (0, "healthy")})
    checks = {c.name: c for c in check.service_checks(engine, dep, current, specs)}
    assert checks["service db"].status == PASS
    assert checks["service redis"].status == FAIL and "healthcheck fails" in checks["service redis"].detail


def test_image_check_names_image_and_service(tmp_path):
    dep = Deployment(prefix=tmp_path, runtime="podman", images=[
        {"ref": "langgenius/dify-api:1.11.3", "services": ["api", "worker"]},
        {"ref": "redis:6-alpine", "services": ["redis"]}])
    engine = _engine("podman", {("podman", "image", "inspect", "docker.io/langgenius/dify-api:1.11.3"): (0, "[]")})
    c = check.image_check(engine, dep)
    assert c.status == FAIL and c.detail == "missing 1 of 2: redis:6-alpine (service: redis)"
    engine = _engine("podman", {("podman", "image", "inspect"): (0, "[]")})
    assert check.image_check(engine, dep).status == PASS


def test_report_render_json_and_ok():
    report = CheckReport([Check("a", PASS, "fine"), Check("b", WARN, "meh", "wait"), Check("c", FAIL, "bad", "fix")])
    assert not report.ok and report.counts() == {"pass": 1, "warn": 1, "fail": 1}
    text = report.render()
    assert "FAIL    c" in text and "c: fix" in text and "b: wait" in text and "NOT ready" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["checks"][2] == {"name": "c", "status": "fail", "detail": "bad", "hint": "fix"}
    assert CheckReport([Check("a", PASS), Check("b", WARN)]).ok


def test_nginx_base_url_from_env():
    assert check.nginx_base_url({"EXPOSE_NGINX_PORT": "8080"}) == ("http://127.0.0.1:8080", False)
    assert check.nginx_base_url({}) == ("http://127.0.0.1:80", False)
    assert check.nginx_base_url({"NGINX_HTTPS_ENABLED": "true", "EXPOSE_NGINX_SSL_PORT": "8443"}) == \
        ("https://127.0.0.1:8443", True)


# --- the task -------------------------------------------------------------------------------------------

def _invoke(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "invoke", "check", *args], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)


def test_task_model_servers_only_json_and_exit_code(tmp_path):
    key = "sk-task-secret-1234"
    routes = {"/api/tags": Reply(body=ollama_tags("llama3:latest")),
              "/v1/models": Reply(body=vllm_models("llama"), bearer=key)}
    with serve(routes) as url:
        ok = _invoke("--skip-deployment", "--ollama-url", url, "--ollama-model", "llama3",
                     "--vllm-url", url, "--vllm-api-key", key, "--json")
        bad = _invoke("--skip-deployment", "--vllm-url", url, "--vllm-model", "llama", "--timeout", "5")
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["ok"] and [c["name"] for c in data["checks"]] == ["ollama", "vllm"]
    assert key not in ok.stdout + ok.stderr
    assert bad.returncode == 1 and "HTTP 401" in bad.stdout and "--vllm-api-key" in bad.stdout


def test_task_without_a_deployment_says_what_to_do(tmp_path):
    res = _invoke("--prefix", str(tmp_path))
    assert res.returncode == 1
    assert "no dify-airgap deployment" in res.stdout + res.stderr and "--prefix" in res.stdout + res.stderr


# --- --wait: check again while something fails ----------------------------------------------------

def test_wait_checks_again_until_a_starting_server_answers():
    with serve({"/api/tags": Reply(body=ollama_tags("llama3:latest"), fail_first=2)}) as url:
        once = check.run_checks(ollama_url=url, timeout=5)
        assert not once.ok and "HTTP 503" in once.by_name("ollama").detail
        report = check.run_checks(ollama_url=url, timeout=5, wait=30, interval=0.2)
    assert report.ok, report.render()
    assert report.by_name("ollama").status == PASS


def test_wait_gives_up_after_its_time_with_the_last_report():
    with serve({"/api/tags": Reply(status=500, body={"error": "broken"})}) as url:
        started = time.monotonic()
        report = check.run_checks(ollama_url=url, timeout=5, wait=1.0, interval=0.2)
        took = time.monotonic() - started
        asked = len(requests_seen(url))
    assert not report.ok and "HTTP 500" in report.by_name("ollama").detail
    assert 1.0 <= took < 10
    assert asked >= 3  # asked again and again, not once


def test_task_wait_option_exit_code():
    with serve({"/api/tags": Reply(body=ollama_tags("llama3:latest"), fail_first=1)}) as url:
        res = _invoke("--skip-deployment", "--ollama-url", url, "--wait", "30")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PASS    ollama" in res.stdout


# --- model servers through Dify's SSRF proxy (what the api container gets back) -------------------------

SQUID_DENIED = ("HTTP/1.1 403 Forbidden\r\nServer: squid/6.13\r\nX-Squid-Error: ERR_ACCESS_DENIED 0\r\n"
                "Content-Type: text/html;charset=utf-8\r\n\r\n")
SQUID_CONNECT_FAIL = "HTTP/1.1 503 Service Unavailable\r\nServer: squid\r\nX-Squid-Error: ERR_CONNECT_FAIL 111\r\n\r\n"
OLLAMA_OK = "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n\r\n"
VLLM_NEEDS_KEY = "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n\r\n"
BUSYBOX_WGET_OK = "Connecting to ssrf_proxy:3128 (172.18.0.5:3128)\n  HTTP/1.1 200 OK\n  Content-Type: text/json\n"


@pytest.mark.parametrize(("code", "output", "status", "says"), [
    (0, SQUID_DENIED, probes.FAIL, "the SSRF proxy refused"),
    (0, SQUID_CONNECT_FAIL, probes.FAIL, "could not connect to 10.0.0.7:11434 (err_connect_fail"),
    (0, OLLAMA_OK, probes.PASS, "answers HTTP 200 from the api container through http://ssrf_proxy:3128"),
    (0, VLLM_NEEDS_KEY, probes.PASS, "answers HTTP 401"),  # reachable: the key is the vllm check's business
    (0, BUSYBOX_WGET_OK, probes.PASS, "answers HTTP 200"),
    # busybox wget shows no header of an error answer (seen on real squid 5.7): the proxy's 403 / 503
    (1, "Connecting to ssrf_proxy:3128 (10.89.0.5:3128)\nwget: server returned error: HTTP/1.1 403 Forbidden",
     probes.FAIL, "the SSRF proxy refused"),
    (1, "Connecting to ssrf_proxy:3128 (10.89.0.5:3128)\nwget: server returned error: HTTP/1.1 503 Service "
        "Unavailable", probes.FAIL, "could not connect"),
    (28, "curl: (28) Operation timed out after 5001 milliseconds", probes.FAIL, "timeout"),
    (7, "curl: (7) Failed to connect to ssrf_proxy port 3128: Connection refused", probes.FAIL, "could not be fetched"),
])
def test_a_model_server_through_the_ssrf_proxy_is_judged_by_what_squid_answered(code, output, status, says):
    got = probes.judge_proxied("ollama via dify's proxy", "http://10.0.0.7:11434/api/tags", "http://ssrf_proxy:3128",
                               code, output, 5)
    assert got.status == status and says in got.detail, got
    if "refused" in says:
        assert "--model-server" in got.hint and "SSRF_PROXY_ALLOW_PRIVATE_IPS" in got.hint


def test_proxied_fetch_passes_url_and_proxy_as_arguments_never_inside_the_script():
    argv = probes.proxied_argv("http://10.0.0.7:11434/api/tags?x=$(id)", "http://ssrf_proxy:3128", 4.6)
    assert argv[:2] == ["sh", "-c"] and argv[3:] == ["sh", "http://10.0.0.7:11434/api/tags?x=$(id)",
                                                      "http://ssrf_proxy:3128", "5"]
    assert "$(id)" not in argv[2] and '-x "$2"' in argv[2] and 'http_proxy="$2"' in argv[2]


def test_model_urls_are_the_endpoints_dify_calls():
    assert probes.model_urls("http://h:11434/api", "http://v:8000/v1") == [
        ("ollama via dify's proxy", "http://h:11434/api/tags"), ("vllm via dify's proxy", "http://v:8000/v1/models")]
    assert probes.model_urls(None, None) == []


@pytest.mark.parametrize("given", ["h:11434", "http://h:11434", "http://h:11434/", "http://h:11434/api",
                                   "http://h:11434/api/tags"])
def test_ollama_url_in_any_common_spelling_asks_api_tags_once(given):
    assert probes.ollama_base(given) + "/api/tags" == "http://h:11434/api/tags"


def test_websocket_check_wants_a_socket_io_handshake_through_nginx():
    handshake = '0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000}'
    with serve({"/socket.io/": Reply(200, handshake, content_type="text/plain")}) as base:
        assert check.websocket_check(base, 5, True).status == PASS
    with serve({"/socket.io/": Reply(200, "<html>web</html>", content_type="text/html")}) as base:
        got = check.websocket_check(base, 5, True)
        assert got.status == FAIL and "not a socket.io handshake" in got.detail and "resolver" in got.hint
    with serve({"/socket.io/": Reply(502, "bad gateway", content_type="text/html")}) as base:
        got = check.websocket_check(base, 5, True)
        assert got.status == FAIL and "HTTP 502" in got.detail


@pytest.mark.parametrize("without", ["nothing", "python3", "python3 and bash", "python3, bash is busybox's ash"])
def test_the_tcp_probe_script_connects_with_whatever_the_container_has(tmp_path, without):
    """The script `check` runs in the api container for an external server, run here with python3 (Dify's api),
    bash's /dev/tcp, or busybox-like nc only: exit 0 to a listening port, non-zero to a closed one."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    hidden = {"nothing": (), "python3": ("python3",), "python3 and bash": ("python3", "bash"),
              "python3, bash is busybox's ash": ("python3", "bash")}[without]
    for tool in ("sh", "timeout", "sleep", "kill", "python3", "bash"):
        found = shutil.which(tool)
        if found and tool not in hidden:
            (bindir / tool).symlink_to(found)
    busybox = shutil.which("busybox")  # the stand-in api's nc (no -z); the lab installs busybox-static
    if busybox:
        (bindir / "nc").symlink_to(busybox)
        if without.endswith("ash"):  # the stand-in api: `bash` is busybox's ash, without /dev/tcp
            (bindir / "bash").symlink_to(busybox)
    elif without.startswith("python3 and") or without.endswith("ash"):
        pytest.skip("no busybox here for its nc")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        open_ = subprocess.run(probes.tcp_argv("127.0.0.1", port, 3), env={"PATH": str(bindir)}, capture_output=True,
                               text=True, timeout=30, stdin=subprocess.DEVNULL)
    closed = subprocess.run(probes.tcp_argv("127.0.0.1", port, 3), env={"PATH": str(bindir)}, capture_output=True,
                            text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert open_.returncode == 0, open_.stderr
    assert closed.returncode != 0


def test_middleware_flag_refuses_a_full_deployment_naming_both(tmp_path):
    Deployment(prefix=tmp_path, runtime="docker", dify_version="1.16.0").save()
    res = _invoke("--prefix", str(tmp_path), "--middleware", "--json")
    doc = json.loads(res.stdout)
    assert res.returncode == 1 and "runs the full Dify stack, not the middleware one" in doc["error"]
    assert "drop --middleware" in doc["hint"]


def test_a_middleware_port_that_answers_passes_and_one_that_does_not_fails_naming_service_and_file():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        ok = check.host_port_check("redis", "0.0.0.0", port, 5)
    assert ok.status == PASS and f"127.0.0.1:{port}" in ok.detail
    bad = check.host_port_check("redis", "", port, 5)  # the listener is closed now
    assert bad.status == FAIL and "redis" in bad.hint and "middleware.env" in bad.hint
