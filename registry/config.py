"""Settings: one frozen object built from defaults, a TOML file, the environment and CLI flags.

Every setting has a default, a key in the TOML file (``section.key``) and an environment variable
(ollama's name where ollama has one). Modules receive the ``Settings`` object explicitly; none reads
the environment on its own, which keeps tests hermetic and lets two servers run in one process.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from registry.units import parse_byte_size, parse_duration_setting

DEFAULT_PORT = 11434
DATABASE_NAME = "corral.db"
LOG_FORMATS = ("text", "json")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")


class SettingsError(ValueError):
    """An invalid setting; the message names the setting so startup can print one clear line."""


@dataclass(frozen=True)
class ListenAddress:
    """Where the server listens, parsed from OLLAMA_HOST exactly as ollama's envconfig.Host does."""

    scheme: str
    host: str
    port: int

    @property
    def is_loopback(self) -> bool:
        if self.host in ("localhost",):
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_ollama_host(value: str) -> ListenAddress:
    """Parse OLLAMA_HOST: optional scheme, host, optional port (80/443 default when a scheme is given)."""
    s = value.strip().strip("\"'")
    default_port = DEFAULT_PORT
    scheme, sep, hostport = s.partition("://")
    if not sep:
        scheme, hostport = "http", s
        if s == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    else:
        raise SettingsError(f"OLLAMA_HOST: unsupported scheme {scheme!r}")
    hostport = hostport.split("/", 1)[0]
    host, port_text = _split_host_port(hostport)
    if port_text is None:
        host, port = "127.0.0.1", default_port
        bare = hostport.strip("[]")
        if bare:
            host = bare
    else:
        try:
            port = int(port_text)
        except ValueError:
            raise SettingsError(f"OLLAMA_HOST: invalid port {port_text!r}") from None
        if not 0 <= port <= 65535:
            raise SettingsError(f"OLLAMA_HOST: invalid port {port_text!r}")
    return ListenAddress(scheme=scheme, host=host, port=port)


def _split_host_port(hostport: str) -> tuple[str, str | None]:
    """Go's net.SplitHostPort, returning port None where Go would report an error."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end != -1 and hostport[end + 1 : end + 2] == ":":
            return hostport[1:end], hostport[end + 2 :]
        return hostport, None
    if hostport.count(":") == 1:
        host, port = hostport.split(":")
        return host, port
    return hostport, None


def _bool(text: str) -> bool:
    s = text.strip().lower()
    if s in ("1", "true", "yes", "on", "t"):
        return True
    if s in ("0", "false", "no", "off", "f", ""):
        return False
    raise ValueError(f"expected a boolean, got {text!r}")


def _int(text: str) -> int:
    return int(str(text).strip())


def _nonneg_int(text: str) -> int:
    n = _int(text)
    if n < 0:
        raise ValueError(f"must not be negative, got {n}")
    return n


def _list(text: Any) -> tuple[str, ...]:
    if isinstance(text, (list, tuple)):
        return tuple(str(x).strip() for x in text if str(x).strip())
    return tuple(p.strip() for p in str(text).split(",") if p.strip())


def _url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s) URL, got {text!r}")
    return text.strip().rstrip("/")


def _database_url(text: str) -> str:
    """A catalogue URL for one of the two async engines corral supports. The plain spellings
    (`sqlite://`, `postgres://`, `postgresql://`) mean their async drivers: aiosqlite, and asyncpg
    of the `postgres` extra, which must then be installed (one line here, not a traceback later)."""
    url = text.strip()
    scheme, sep, rest = url.partition("://")
    if not url or not sep:
        if url:
            raise ValueError(f"expected an SQLAlchemy URL, got {text!r}")
        return url
    if scheme in ("postgres", "postgresql"):
        url, scheme = f"postgresql+asyncpg://{rest}", "postgresql+asyncpg"
    elif scheme == "sqlite":
        url, scheme = f"sqlite+aiosqlite://{rest}", "sqlite+aiosqlite"
    if scheme == "postgresql+asyncpg" and importlib.util.find_spec("asyncpg") is None:
        raise ValueError("a PostgreSQL catalogue needs the postgres extra: pip install 'corral[postgres]'")
    if scheme not in ("postgresql+asyncpg", "sqlite+aiosqlite"):
        raise ValueError(f"expected sqlite+aiosqlite:///<file> or postgresql+asyncpg://…, got {scheme}://")
    return url


def _optional_url(text: str) -> str:
    return _url(text) if text.strip() else ""


NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _node_name(text: str) -> str:
    """A node's name: also the name of its lock file in the shared models folder."""
    name = text.strip()
    if name and not NODE_NAME.match(name):
        raise ValueError(f"expected letters, digits, '.', '_' or '-' (at most 63), got {text!r}")
    return name


def _fraction(text: str) -> float:
    f = float(text)
    if not 0 < f <= 1:
        raise ValueError(f"must be in (0, 1], got {f}")
    return f


def _debug_level(text: str) -> int:
    s = str(text).strip().lower()
    if s in ("", "0", "false"):
        return 0
    if s in ("1", "true"):
        return 1
    n = int(s)
    if n < 0:
        raise ValueError(f"must not be negative, got {n}")
    return n


def _log_format(text: str) -> str:
    s = str(text).strip().lower()
    if s not in LOG_FORMATS:
        raise ValueError(f"expected one of {', '.join(LOG_FORMATS)}, got {text!r}")
    return s


def _event_loop(text: str) -> str:
    s = str(text).strip().lower()
    if s not in EVENT_LOOPS:
        raise ValueError(f"expected one of {', '.join(EVENT_LOOPS)}, got {text!r}")
    return s


def _positive_duration(text: str) -> float:
    seconds = parse_duration_setting(str(text))
    if seconds <= 0:
        raise ValueError(f"must be positive, got {text!r}")
    return seconds


def _path(text: str) -> Path:
    return Path(os.path.expanduser(str(text).strip()))


def _optional_path(text: str) -> Path | None:
    return _path(text) if str(text).strip() else None


def _optional_bool(text: str) -> bool | None:
    return None if not str(text).strip() else _bool(text)


@dataclass(frozen=True)
class _Spec:
    field: str
    env: str
    key: str  # "section.name" in the TOML file
    default: Any
    parse: Callable[[Any], Any]
    doc: str


_HOME = Path(os.path.expanduser("~"))

SETTINGS_SPEC: tuple[_Spec, ...] = (
    # --- server
    _Spec("host", "OLLAMA_HOST", "server.host", "127.0.0.1:11434", parse_ollama_host,
          "Listen address, parsed like ollama: [scheme://]host[:port]."),
    _Spec("origins", "OLLAMA_ORIGINS", "server.origins", (), _list,
          "Extra allowed CORS origins (comma list), on top of ollama's localhost/app/vscode defaults."),
    _Spec("debug", "OLLAMA_DEBUG", "server.debug", 0, _debug_level, "Log level: 0 info, 1 debug, 2 trace."),
    _Spec("log_format", "CORRAL_LOG_FORMAT", "server.log_format", "text", _log_format,
          "Log lines on stderr: 'text', or 'json' (one object per line with time, level, logger, message "
          "and the access fields)."),
    _Spec("event_loop", "CORRAL_EVENT_LOOP", "server.event_loop", "auto", _event_loop,
          "The server's event loop: 'uvloop', 'asyncio' (Python's own), or 'auto' (uvloop where it is "
          "installed: a cold fill costs less CPU on it)."),
    _Spec("tls_cert", "CORRAL_TLS_CERT", "server.tls_cert", "", _optional_path, "PEM certificate for https."),
    _Spec("tls_key", "CORRAL_TLS_KEY", "server.tls_key", "", _optional_path, "PEM private key for https."),
    _Spec("admin_token", "CORRAL_ADMIN_TOKEN", "server.admin_token", "", str,
          "Bearer token for admin routes; required when listening beyond loopback."),
    _Spec("no_cloud", "OLLAMA_NO_CLOUD", "server.no_cloud", False, _bool,
          "corral never uses ollama's cloud; when set, /api/status also names this setting (source \"both\")."),
    _Spec("advertise_url", "CORRAL_ADVERTISE_URL", "server.advertise_url", "", _optional_url,
          "Where other nodes and operators reach this node (cluster mode); default the listen address, "
          "with the host name when listening on every interface."),
    # --- store
    _Spec("models", "OLLAMA_MODELS", "store.models", str(_HOME / ".corral" / "models"), _path,
          "Models root: blobs/ and the signing key live here."),
    _Spec("database_url", "CORRAL_DATABASE_URL", "store.database_url", "", _database_url,
          "SQLAlchemy URL of the catalogue: sqlite+aiosqlite:///<file>, or "
          "postgresql+asyncpg://<user>:<password>@<host>/<database> (the postgres extra); default the file "
          "corral.db inside the models root."),
    _Spec("owner_heartbeat", "CORRAL_OWNER_HEARTBEAT", "store.owner_heartbeat", 10.0, _positive_duration,
          "How often the server renews its claim on the catalogue (its node row, in cluster mode); a claim "
          "unrenewed for 3 intervals may be taken over, a node unrenewed for 3 intervals is stale."),
    _Spec("cluster", "CORRAL_CLUSTER", "store.cluster", False, _bool,
          "Run as one node of several sharing this catalogue (PostgreSQL) and models folder (a shared "
          "filesystem)."),
    _Spec("node_name", "CORRAL_NODE_NAME", "store.node_name", "", _node_name,
          "This node's name in cluster mode, unique among the nodes; default the host name."),
    _Spec("tmpdir", "OLLAMA_TMPDIR", "store.tmpdir", "", _optional_path,
          "Scratch space for uploads and bundles; default <models>/tmp."),
    _Spec("noprune", "OLLAMA_NOPRUNE", "store.noprune", False, _bool,
          "Keep stale partial files at startup and unreferenced layers after a pull."),
    # --- mirror
    _Spec("upstream", "CORRAL_UPSTREAM", "mirror.upstream", "https://registry.ollama.ai", _url,
          "Registry that names without a host (or naming registry.ollama.ai) are fetched from."),
    _Spec("allowed_hosts", "CORRAL_ALLOWED_HOSTS", "mirror.allowed_hosts", (), _list,
          "Hosts (host[:port]) corral may contact besides its upstream: registries a name or push names, "
          "LAN data URLs; offline, the only ones."),
    _Spec("manifest_ttl", "CORRAL_MANIFEST_TTL", "mirror.manifest_ttl", 300.0, parse_duration_setting,
          "Age after which a cached tag is re-checked upstream."),
    _Spec("offline", "CORRAL_OFFLINE", "mirror.offline", False, _bool,
          "Contact only the hosts in CORRAL_ALLOWED_HOSTS: not the upstream, nothing else."),
    _Spec("upstream_rate", "CORRAL_UPSTREAM_RATE", "mirror.upstream_rate", 0, parse_byte_size,
          "Upstream bandwidth limit for fills in bytes/s (human units), 0 = unlimited."),
    _Spec("sync", "CORRAL_SYNC", "mirror.sync", (), _list, "Keep-warm models pulled at startup and on schedule."),
    _Spec("sync_interval", "CORRAL_SYNC_INTERVAL", "mirror.sync_interval", 3600.0, parse_duration_setting,
          "How often keep-warm models are refreshed; 0 = only at startup."),
    # --- cache lifecycle
    _Spec("max_cache", "CORRAL_MAX_CACHE", "cache.max_bytes", 0, parse_byte_size,
          "Byte quota of the blob store (human units), 0 = none; what the disk can hold always caps it."),
    _Spec("high_watermark", "CORRAL_CACHE_HIGH_WATERMARK", "cache.high_watermark", 0.95, _fraction,
          "Fraction of the quota that starts pruning."),
    _Spec("low_watermark", "CORRAL_CACHE_LOW_WATERMARK", "cache.low_watermark", 0.85, _fraction,
          "Fraction of the quota pruning stops at."),
    _Spec("keep", "CORRAL_KEEP", "cache.keep", (), _list, "Glob patterns of model names never evicted."),
    _Spec("scrub_interval", "CORRAL_SCRUB_INTERVAL", "cache.scrub_interval", 0.0, parse_duration_setting,
          "Pause between background re-hashes of stored blobs; 0 = off."),
    # --- push / air gap
    _Spec("max_upload", "CORRAL_MAX_UPLOAD", "push.max_upload", 64 * 1024**3, parse_byte_size,
          "Largest blob accepted by push or /api/blobs."),
    _Spec("upload_timeout", "CORRAL_UPLOAD_TIMEOUT", "push.upload_timeout", 3600.0, parse_duration_setting,
          "Idle time after which an abandoned upload is removed."),
    _Spec("pull_auth", "CORRAL_PULL_AUTH", "push.pull_auth", False, _bool, "Require a key for pulls too."),
    _Spec("require_signed", "CORRAL_REQUIRE_SIGNED", "push.require_signed", False, _bool,
          "Refuse bundles that are not signed by an authorized key."),
    # --- runner
    _Spec("keep_alive", "OLLAMA_KEEP_ALIVE", "runner.keep_alive", 300.0, parse_duration_setting,
          "How long an idle model stays loaded; negative = forever."),
    _Spec("max_loaded_models", "OLLAMA_MAX_LOADED_MODELS", "runner.max_loaded_models", 0, _nonneg_int,
          "Models kept loaded at once; 0 = 3 per GPU (3 on CPU)."),
    _Spec("num_parallel", "OLLAMA_NUM_PARALLEL", "runner.num_parallel", 1, _nonneg_int,
          "Concurrent sequences per loaded model, decoded in one batch."),
    _Spec("max_queue", "OLLAMA_MAX_QUEUE", "runner.max_queue", 512, _nonneg_int,
          "Requests that may wait for a model load before 503."),
    _Spec("context_length", "OLLAMA_CONTEXT_LENGTH", "runner.context_length", 0, _nonneg_int,
          "Default num_ctx; 0 = 4096."),
    _Spec("flash_attention", "OLLAMA_FLASH_ATTENTION", "runner.flash_attention", "", _optional_bool,
          "Use flash attention (unset = llama.cpp's default)."),
    _Spec("llm_library", "OLLAMA_LLM_LIBRARY", "runner.llm_library", "", str,
          "'cpu' forces CPU inference even when a GPU backend is present."),
    _Spec("max_vram", "OLLAMA_MAX_VRAM", "runner.max_vram", 0, parse_byte_size,
          "Cap on GPU memory used for offloaded layers, 0 = no cap."),
    _Spec("load_timeout", "OLLAMA_LOAD_TIMEOUT", "runner.load_timeout", 300.0, parse_duration_setting,
          "Longest a model load may take."),
    # --- the CLI's own
    _Spec("nohistory", "OLLAMA_NOHISTORY", "client.nohistory", False, _bool,
          "`corral run` keeps no history of typed lines in ~/.corral/history."),
)


@dataclass(frozen=True)
class Settings:
    """Everything configurable, resolved once at startup. See SETTINGS_SPEC for the documentation."""

    host: ListenAddress
    origins: tuple[str, ...]
    debug: int
    log_format: str
    event_loop: str
    tls_cert: Path | None
    tls_key: Path | None
    admin_token: str
    no_cloud: bool
    advertise_url: str
    models: Path
    database_url: str
    owner_heartbeat: float
    cluster: bool
    node_name: str
    tmpdir: Path | None
    noprune: bool
    upstream: str
    allowed_hosts: tuple[str, ...]
    manifest_ttl: float
    offline: bool
    upstream_rate: int
    sync: tuple[str, ...]
    sync_interval: float
    max_cache: int
    high_watermark: float
    low_watermark: float
    keep: tuple[str, ...]
    scrub_interval: float
    max_upload: int
    upload_timeout: float
    pull_auth: bool
    require_signed: bool
    keep_alive: float
    max_loaded_models: int
    num_parallel: int
    max_queue: int
    context_length: int
    flash_attention: bool | None
    llm_library: str
    max_vram: int
    load_timeout: float
    nohistory: bool

    @property
    def blobs_dir(self) -> Path:
        return self.models / "blobs"

    @property
    def default_database(self) -> Path | None:
        """The catalogue file inside the models root, unless CORRAL_DATABASE_URL names another."""
        if self.database_url != _default_database_url(self.models):
            return None
        return self.models / DATABASE_NAME

    @property
    def scratch_dir(self) -> Path:
        return self.tmpdir or (self.models / "tmp")

    @property
    def key_path(self) -> Path:
        """corral's own ed25519 identity, OpenSSH format like ollama's ~/.ollama/id_ed25519."""
        return self.models / "id_ed25519"

    @property
    def authorized_keys_path(self) -> Path:
        return self.models / "authorized_keys"

    @property
    def node(self) -> str:
        """This node's name: CORRAL_NODE_NAME, else the host name (made a valid name)."""
        return self.node_name or re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:63] or "node"

    @property
    def advertised_url(self) -> str:
        """CORRAL_ADVERTISE_URL, else the listen URL; on every interface, with the host name instead."""
        if self.advertise_url:
            return self.advertise_url
        if self.host.host in ("0.0.0.0", "::", ""):
            return ListenAddress(self.host.scheme, socket.getfqdn(), self.host.port).url
        return self.host.url

    @property
    def needs_admin_token(self) -> bool:
        return not self.host.is_loopback

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _default_database_url(models: Path) -> str:
    """Inside the models root: a catalogue belongs to one folder, which its server locks."""
    return f"sqlite+aiosqlite:///{models / DATABASE_NAME}"


def _toml_lookup(data: Mapping[str, Any], key: str) -> Any:
    section, _, name = key.partition(".")
    table = data.get(section, {})
    if not isinstance(table, Mapping):
        raise SettingsError(f"{section}: expected a table in the config file")
    return table.get(name, _MISSING)


_MISSING = object()


def load_settings(
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    only: Collection[str] | None = None,
) -> Settings:
    """Build Settings from defaults < TOML file < environment < overrides (CLI flags).

    The config file is ``config_file``, else ``$CORRAL_CONFIG``, else none. Unknown TOML keys are an
    error, because a misspelt quota silently ignored is worse than a refusal to start. With `only`,
    the other settings keep their defaults: a client command reads the few it uses, so a bad value
    of a server-only setting in the shared environment does not stop it.
    """
    env = os.environ if env is None else env
    if config_file is None and env.get("CORRAL_CONFIG"):
        config_file = Path(env["CORRAL_CONFIG"])
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            data = tomllib.loads(Path(config_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"config file {config_file}: {exc}") from None
        known = {s.key for s in SETTINGS_SPEC}
        for section, table in data.items():
            if not isinstance(table, Mapping):
                raise SettingsError(f"config file {config_file}: {section} must be a table")
            for name in table:
                if f"{section}.{name}" not in known:
                    raise SettingsError(f"config file {config_file}: unknown setting {section}.{name}")
    overrides = overrides or {}
    values: dict[str, Any] = {}
    for spec in SETTINGS_SPEC:
        raw: Any = spec.default
        source = "default"
        if only is not None and spec.field not in only:
            values[spec.field] = _parse(spec, raw, source)
            continue
        from_file = _toml_lookup(data, spec.key)
        if from_file is not _MISSING:
            raw, source = from_file, spec.key
        if spec.env in env:
            raw, source = env[spec.env].strip().strip("\"'"), spec.env
        if spec.field in overrides and overrides[spec.field] is not None:
            raw, source = overrides[spec.field], f"--{spec.field.replace('_', '-')}"
        values[spec.field] = _parse(spec, raw, source)
    if not values["database_url"]:
        values["database_url"] = _default_database_url(values["models"])
    if values["cluster"] and not values["database_url"].startswith("postgresql"):
        raise SettingsError("CORRAL_CLUSTER: cluster mode needs a PostgreSQL catalogue every node reaches "
                            "(CORRAL_DATABASE_URL=postgresql+asyncpg://…); an SQLite catalogue is one server's")
    if values["low_watermark"] > values["high_watermark"]:
        raise SettingsError("CORRAL_CACHE_LOW_WATERMARK: must not exceed CORRAL_CACHE_HIGH_WATERMARK")
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        raise SettingsError("CORRAL_TLS_CERT: a certificate and a key must be given together")
    return Settings(**values)


def _parse(spec: _Spec, raw: Any, source: str) -> Any:
    if isinstance(raw, (ListenAddress, Path, tuple)) or raw is None:
        return raw
    if raw == spec.default and not isinstance(raw, str):
        return raw
    try:
        return spec.parse(raw)
    except SettingsError as exc:
        raise SettingsError(f"{spec.env} ({source}): {exc}") from None
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"{spec.env} ({source}): {exc}") from None
