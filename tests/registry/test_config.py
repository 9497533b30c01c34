"""Settings: defaults, TOML file, environment, and one-line errors naming the setting."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from registry.config import NODE_NAME, SETTINGS_SPEC, SettingsError, load_settings, parse_ollama_host

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ("http", "127.0.0.1", 11434)),
        ("0.0.0.0", ("http", "0.0.0.0", 11434)),
        ("example.com:8080", ("http", "example.com", 8080)),
        (":9000", ("http", "", 9000)),
        ("https://corral.lan", ("https", "corral.lan", 443)),
        ("http://corral.lan", ("http", "corral.lan", 80)),
        ("[::1]:11500", ("http", "::1", 11500)),
        ("ollama.com", ("https", "ollama.com", 443)),
    ],
)
def test_ollama_host_parsing(value: str, expected: tuple[str, str, int]) -> None:
    h = parse_ollama_host(value)
    assert (h.scheme, h.host, h.port) == expected


def test_defaults() -> None:
    s = load_settings(env={})
    assert s.host.port == 11434 and s.host.is_loopback
    assert s.models == Path("~/.corral/models").expanduser()
    assert s.database_url == f"sqlite+aiosqlite:///{s.models / 'corral.db'}"  # inside the models root
    assert s.default_database == s.models / "corral.db"
    assert s.owner_heartbeat == 10
    assert s.keep_alive == 300 and s.num_parallel == 1 and s.max_queue == 512
    assert s.upstream == "https://registry.ollama.ai"


def test_the_default_database_follows_the_models_root_unless_a_url_is_given() -> None:
    assert load_settings(env={"OLLAMA_MODELS": "/srv/a"}).default_database == Path("/srv/a/corral.db")
    assert load_settings(env={"OLLAMA_MODELS": "/srv/a", "CORRAL_DATABASE_URL": ""}).default_database == Path(
        "/srv/a/corral.db")
    named = load_settings(env={"OLLAMA_MODELS": "/srv/a", "CORRAL_DATABASE_URL": "sqlite+aiosqlite:////srv/c.db"})
    assert named.database_url == "sqlite+aiosqlite:////srv/c.db" and named.default_database is None


@pytest.mark.parametrize(("given", "meant"), [
    ("postgres://corral:pw@db.lan/catalogue", "postgresql+asyncpg://corral:pw@db.lan/catalogue"),
    ("postgresql://db.lan:5433/corral", "postgresql+asyncpg://db.lan:5433/corral"),
    ("postgresql+asyncpg://db.lan/corral", "postgresql+asyncpg://db.lan/corral"),
    ("sqlite:////srv/c.db", "sqlite+aiosqlite:////srv/c.db"),
])
def test_plain_database_urls_mean_the_async_drivers(given: str, meant: str) -> None:
    assert load_settings(env={"CORRAL_DATABASE_URL": given}).database_url == meant


@pytest.mark.parametrize("url", ["mysql+aiomysql://db.lan/corral", "postgresql+psycopg2://db.lan/corral", "corral.db"])
def test_a_database_corral_cannot_drive_is_one_line(url: str) -> None:
    with pytest.raises(SettingsError, match=r"^CORRAL_DATABASE_URL \(CORRAL_DATABASE_URL\): expected "):
        load_settings(env={"CORRAL_DATABASE_URL": url})


def test_cluster_mode_needs_postgresql_and_names_the_node() -> None:
    with pytest.raises(SettingsError, match=r"^CORRAL_CLUSTER: cluster mode needs a PostgreSQL catalogue"):
        load_settings(env={"CORRAL_CLUSTER": "1"})
    node = load_settings(env={"CORRAL_CLUSTER": "1", "CORRAL_DATABASE_URL": "postgres://db/corral",
                              "CORRAL_NODE_NAME": "gpu-1", "OLLAMA_HOST": "10.0.0.5:8080"})
    assert (node.cluster, node.node, node.advertised_url) == (True, "gpu-1", "http://10.0.0.5:8080")
    everywhere = load_settings(env={"OLLAMA_HOST": "0.0.0.0:8080", "CORRAL_ADVERTISE_URL": ""})
    assert everywhere.advertised_url == f"http://{socket.getfqdn()}:8080"
    assert NODE_NAME.match(everywhere.node)  # the host name by default
    told = load_settings(env={"CORRAL_ADVERTISE_URL": "https://corral-2.lan/"})
    assert told.advertised_url == "https://corral-2.lan"
    with pytest.raises(SettingsError, match="CORRAL_NODE_NAME"):
        load_settings(env={"CORRAL_NODE_NAME": "../escape"})


def test_environment_beats_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[store]\nmodels = "/srv/a"\n[cache]\nmax_bytes = "200GB"\n')
    s = load_settings(env={"OLLAMA_MODELS": "/srv/b"}, config_file=cfg)
    assert s.models == Path("/srv/b")
    assert s.max_cache == 200 * 1000**3


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OLLAMA_HOST": "127.0.0.1:99999"}, "OLLAMA_HOST"),
        ({"OLLAMA_NUM_PARALLEL": "many"}, "OLLAMA_NUM_PARALLEL"),
        ({"OLLAMA_KEEP_ALIVE": "10 parsecs"}, "OLLAMA_KEEP_ALIVE"),
        ({"CORRAL_MAX_CACHE": "lots"}, "CORRAL_MAX_CACHE"),
        ({"OLLAMA_NOPRUNE": "perhaps"}, "OLLAMA_NOPRUNE"),
        ({"CORRAL_UPSTREAM": "ftp://x"}, "CORRAL_UPSTREAM"),
        ({"CORRAL_OWNER_HEARTBEAT": "0s"}, "CORRAL_OWNER_HEARTBEAT"),
        ({"CORRAL_LOG_FORMAT": "xml"}, "CORRAL_LOG_FORMAT"),
    ],
)
def test_invalid_values_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named) as info:
        load_settings(env=env)
    assert "\n" not in str(info.value)


def test_unknown_file_key_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[cache]\nmax_byte = 1\n")
    with pytest.raises(SettingsError, match=r"cache\.max_byte"):
        load_settings(env={}, config_file=cfg)


def test_shipped_config_file_lists_every_setting() -> None:
    text = (REPO / "config" / "corral.toml").read_text()
    s = load_settings(env={}, config_file=REPO / "config" / "corral.toml")
    assert s.host.port == 11434
    for spec in SETTINGS_SPEC:
        assert spec.key.split(".")[1] in text, spec.key
        assert spec.env in text, spec.env


def test_readme_documents_every_setting() -> None:
    readme = (REPO / "README.md").read_text()
    for spec in SETTINGS_SPEC:
        assert spec.env in readme, spec.env


def test_a_client_reads_only_its_settings_so_a_bad_server_setting_does_not_stop_it() -> None:
    env = {"CORRAL_MAX_CACHE": "lots", "OLLAMA_HOST": "10.0.0.5:8080", "CORRAL_ADMIN_TOKEN": "t"}
    with pytest.raises(SettingsError, match="CORRAL_MAX_CACHE"):
        load_settings(env=env)
    client = load_settings(env=env, only=("host", "admin_token", "models"))
    assert (client.host.port, client.admin_token, client.max_cache) == (8080, "t", 0)
