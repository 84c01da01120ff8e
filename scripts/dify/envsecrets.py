"""Which .env keys are secrets, the groups that must share one value, and how new secrets are made."""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

# --- secrets -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretGroup:
    """Keys that must hold ONE value (both ends of a connection). The first key is the primary."""

    keys: tuple[str, ...]
    kind: str = "token"  # token: 48 alphanumerics; password: 32; complex: 32 + a special character
    why: str = ""


def _load_table() -> tuple[tuple[SecretGroup, ...], dict[str, tuple[str, str]]]:
    """The secret groups and fixed defaults: data in secrets.yaml beside this module (where they come from is
    noted there)."""
    data = yaml.safe_load((Path(__file__).with_name("secrets.yaml")).read_text(encoding="utf-8"))
    groups = tuple(SecretGroup(tuple(g["keys"]), g["kind"], g["why"]) for g in data["groups"])
    return groups, {key: (store, why) for key, (store, why) in data["fixed_defaults"].items()}


SECRET_GROUPS, FIXED_DEFAULTS = _load_table()

# Well-known defaults of past and present Dify examples (the example in use is read too).
KNOWN_DEFAULT_SECRETS: frozenset[str] = frozenset({
    "difyai123456",
    "dify-sandbox",
    "sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U",
    "lYkiYYT6owG+71oLerGzA7GXCgOT++6ovaezWAjpCjf+Sjc3ZtU+qUEi",
    "QaHbTe77CtuXmsfyhR7+vRjI/+XbV1AaFy691iy+kGDv2Jvy0/eAh8Y1",
    "WVF5YThaHlkYwhGUSmCRgsX3tD5ngdN8pkih",
    "Qazwsxedc!@#123",
    "Dify@123",
    "Dify123456",
})

_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|_PWD|SECRET|SECRET_KEY|_KEY|API_KEY|TOKEN|CREDENTIALS|"
                          r"KEY_ID|KEY_SECRET|CONNECTION_STRING|_DSN)$")
_NOT_SECRET = re.compile(r"(_FILENAME|_EXPIRE_MINUTES|_EXPIRE_DAYS|MAX_TOKENS|_VERSION)$")


def group_keys() -> set[str]:
    return {k for g in SECRET_GROUPS for k in g.keys}


def is_secret_key(key: str) -> bool:
    """Whether a variable holds a credential (its value is never printed)."""
    if key in group_keys() or key in FIXED_DEFAULTS:
        return True
    if key == "CELERY_BROKER_URL":
        return True
    return bool(_SECRET_NAME.search(key)) and not _NOT_SECRET.search(key)


def known_defaults(example: Mapping[str, str]) -> set[str]:
    """Every public default secret value: the constants plus what this example ships."""
    found = set(KNOWN_DEFAULT_SECRETS)
    for key in group_keys():
        if example.get(key):
            found.add(example[key])
    return found


def generate_secret(kind: str = "token") -> str:
    """A strong random value from ``secrets``: alphanumerics only, plus one ``_`` for 'complex'."""
    alphabet = string.ascii_letters + string.digits
    length = 48 if kind == "token" else 32
    while True:
        value = "".join(secrets.choice(alphabet) for _ in range(length))
        if (any(c.islower() for c in value) and any(c.isupper() for c in value)
                and any(c.isdigit() for c in value) and value[0].isalpha()):
            break
    if kind == "complex":  # opensearch/opengauss/oracle want a special character
        cut = secrets.randbelow(length - 2) + 1
        value = value[:cut] + "_" + value[cut:]
    return value


