"""Profile selection on the real Dify 1.11.3 files (pure: no engine, no mocks)."""

from __future__ import annotations

import pytest

from scripts.core.errors import AirgapError
from scripts.dify.plan import _interpolate, choose_profiles, declared_profiles, env_profiles


def test_declared_profiles_of_real_file(fixture_dir):
    declared = declared_profiles(fixture_dir)
    for profile in ("postgresql", "mysql", "weaviate", "qdrant", "milvus", "certbot", "unstructured"):
        assert profile in declared


def test_env_profiles_follow_dify_rule(fixture_dir):
    assert env_profiles(fixture_dir / ".env.example") == ["weaviate", "postgresql"]
    assert env_profiles(fixture_dir / ".env.example", {"VECTOR_STORE": "qdrant", "DB_TYPE": "mysql"}) == \
        ["qdrant", "mysql"]


@pytest.mark.parametrize("value, env, expected", [
    ("${A:-x},${B:-y}", {"A": "", "B": "b"}, "x,b"),
    ("${A-x}", {"A": ""}, ""),
    ("${A-x}", {}, "x"),
    ("${A}", {"A": "a"}, "a"),
])
def test_interpolation_like_compose(value, env, expected):
    assert _interpolate(value, env) == expected


def test_several_vector_stores_and_extras(fixture_dir):
    declared = declared_profiles(fixture_dir)
    chosen, stores, warnings = choose_profiles(fixture_dir / ".env.example", declared,
                                               vector_stores=["qdrant", "milvus"], profiles=["certbot"])
    assert chosen == ["postgresql", "weaviate", "qdrant", "milvus", "certbot"]
    assert stores == ["weaviate", "qdrant", "milvus"] and warnings == []


def test_external_vector_store_warns(fixture_dir):
    _, _, warnings = choose_profiles(fixture_dir / ".env.example", declared_profiles(fixture_dir),
                                     vector_stores=["tidb_vector"])
    assert "tidb_vector" in warnings[0]


def test_unknown_profile_suggests_nearest(fixture_dir):
    with pytest.raises(AirgapError, match="did you mean 'certbot'"):
        choose_profiles(fixture_dir / ".env.example", declared_profiles(fixture_dir), profiles=["certbott"])


def test_store_names_are_only_checked_against_a_file_that_declares_such_profiles(tmp_path):
    from scripts.dify.plan import check_store_names

    env = tmp_path / ".env"
    env.write_text("DB_TYPE=postgresql\nVECTOR_STORE=weaviate\n")
    check_store_names(env, [], None, [])  # a file without database profiles (external DB, a toy project)
    with pytest.raises(AirgapError, match="DB_TYPE='postgresql' matches no database profile.*valid: mysql"):
        check_store_names(env, ["mysql", "weaviate"], None, [])
    with pytest.raises(AirgapError, match="VECTOR_STORE='qdrnt'"):
        check_store_names(env, ["postgresql"], None, ["qdrnt"])
