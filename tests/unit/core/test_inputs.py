"""scripts.core.inputs: every bad file or directory is ONE BadInput naming the path, never an OSError."""

from __future__ import annotations

import pytest

from scripts.core.errors import AirgapError, BadInput, UsageError
from scripts.core.inputs import (
    MAX_INPUT_SIZE,
    check_shape,
    http_url,
    output_dir,
    output_file,
    read_bytes,
    read_json,
    read_text,
    shape_problem,
)

SCHEMA = {"format_version": int, "files": [{"path": str, "size": int}], "?plugins": [str], "when": (str, type(None))}


@pytest.mark.parametrize("data, problem", [
    ([1, 2], "the document must be an object, not a list"),
    ({"files": [], "when": None}, "format_version is missing"),
    ({"format_version": "1", "files": [], "when": None}, "format_version must be a number, not a string"),
    ({"format_version": True, "files": [], "when": None}, "format_version must be a number, not true or false"),
    ({"format_version": 1, "files": "x", "when": None}, "files must be a list, not a string"),
    ({"format_version": 1, "files": [{"path": "a", "size": 1}, {"path": "b"}], "when": None},
     "files[1].size is missing"),
    ({"format_version": 1, "files": [], "plugins": [3], "when": None}, "plugins[0] must be a string, not a number"),
    ({"format_version": 1, "files": [], "when": 5}, "when must be a string or null, not a number"),
])
def test_shape_problem_names_the_first_place(data, problem):
    assert shape_problem(data, SCHEMA) == problem
    with pytest.raises(BadInput, match=problem.replace("[", r"\[").replace("]", r"\]")) as caught:
        check_shape(data, SCHEMA, "m.json", "re-copy it")
    assert caught.value.hint == "re-copy it" and isinstance(caught.value, AirgapError)


def test_shape_problem_accepts_a_good_document():
    assert shape_problem({"format_version": 1, "files": [{"path": "a", "size": 1}], "when": "x", "extra": 1},
                         SCHEMA) is None


def test_read_text_and_json_name_the_path(tmp_path):
    (tmp_path / "bom.env").write_bytes(b"\xef\xbb\xbfA=1\n")
    assert read_text(tmp_path / "bom.env", "env file", "fix") == "A=1\n"   # the BOM is not part of the first key
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BadInput, match=r"env file .*bin is not UTF-8 text"):
        read_text(tmp_path / "bin", "env file", "fix")
    with pytest.raises(BadInput, match=r"cannot read manifest .*missing: No such file or directory"):
        read_json(tmp_path / "missing", "manifest", "fix")
    with pytest.raises(BadInput, match="is a directory, not a file"):
        read_json(tmp_path, "manifest", "fix")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(BadInput, match="must be an object, not a list"):
        read_json(tmp_path / "list.json", "manifest", "fix", {"a": int})


def test_output_dir_and_file(tmp_path):
    assert output_dir(tmp_path / "a" / "b", "--out").is_dir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(BadInput, match="is a file, not a directory"):
        output_dir(tmp_path / "f", "--out")
    with pytest.raises(BadInput, match=r"is under .*f, which is a file"):
        output_dir(tmp_path / "f" / "sub", "--out", create=False)
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(BadInput, match="dangling symbolic link"):
        output_dir(tmp_path / "link", "--out")
    assert not output_dir(tmp_path / "later", "--out", create=False).exists()
    with pytest.raises(BadInput, match="is a directory; pass a file name"):
        output_file(tmp_path / "a", "env file")
    assert output_file(tmp_path / "new" / ".env", "env file").parent.is_dir()


def test_an_oversized_or_endless_input_is_refused_unread(tmp_path):
    """#13: a manifest (directory form), env file, record or key larger than the cap is refused, never read whole;
    /dev/zero (a file that never ends) too."""
    big = tmp_path / "manifest.json"
    with open(big, "wb") as out:
        out.truncate(MAX_INPUT_SIZE + 1)                         # sparse: costs no disk
    with pytest.raises(BadInput, match=r"the manifest .*manifest\.json is larger than 16 MiB"):
        read_json(big, "the manifest", "re-copy it")
    with pytest.raises(BadInput, match=r"larger than 1 MiB"):
        read_bytes("/dev/zero", "the key", "pass the key file", limit=1 << 20)
    small = tmp_path / "ok.json"
    small.write_text('{"a": 1}')
    assert read_json(small, "the manifest", "re-copy it") == {"a": 1}


@pytest.mark.parametrize("text", ["notaurl", "10.0.0.5:11434", "ftp://h/x", "http://", "http://h:0", "http://h:99999"])
def test_http_url_refuses_what_is_not_one_naming_the_option(text):
    with pytest.raises(UsageError, match=r"--ollama-url .* is not an http\(s\) URL; write it like http://"):
        http_url(text, "--ollama-url")


def test_http_url_takes_a_url():
    assert http_url(" http://10.0.0.5:11434/api ", "--ollama-url") == "http://10.0.0.5:11434/api"
