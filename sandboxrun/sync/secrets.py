"""Which files hold secrets: by name (families of credential files) and by content.

Two pure checks, shared by every path that sends files away or commits them for the agent
(``pack`` and ``run`` through :class:`ContentCheck`, ``run --with-changes`` through
:func:`secret_paths`):

* :func:`name_reason` — the file's path belongs to a family that almost always holds
  credentials: environment files (``.env``, ``prod.env``, ``.env.local``), private keys and
  key stores (``*.pem``, ``deploy_key``, ``id_rsa``, ``*.p12``, also with backup suffixes such
  as ``key.pem.bak``), credential files of cloud and developer tools (``.aws/``,
  ``.kube/config``, ``.config/gh/hosts.yml``, ``.npmrc``, ``.netrc``...), Terraform variables
  and state, ``secrets.*``/``credentials.*`` data files. Source code and documents
  (``env.py``, ``secrets.md``, ``keyboard.ts``) are never matched by name, and templates
  (``.env.example``, ``*.sample``, ``*.template``) are kept.
* :func:`scan_content` — the bytes of a text file contain a high-confidence secret: a private
  key block (PEM, OpenSSH, PGP; service-account JSON included) or a token whose format is
  published by its issuer (AWS access key id, GitHub, GitLab, Slack, Stripe live, Google API
  and OAuth client secret, Anthropic, OpenAI, npm, PyPI, E2B, SendGrid, Hugging Face,
  DigitalOcean, Azure connection strings). Only the rule's name is ever returned, never the
  matched value. The rules are in :mod:`.secrets_content`.

Speed: the content check runs on every text file while packing. Two engines apply the same
rules with the same results (:func:`content_engine`): Hyperscan (:mod:`.secrets_hs`, one SIMD
pass for every rule, ~1.3 GB/s) where it can be used, else pure Python (a few C-level
``translate``/``find`` passes per file, ~270 MB/s). :class:`ContentCheck` also remembers
contents found clean, for the next session of the same repository.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import pathspec

from sandboxrun.errors import ConfigError
from sandboxrun.sync import secrets_hs
from sandboxrun.sync.secrets_content import (
    _SERVICE_ACCOUNT,
    CHECKS,
    RULES,
    SCAN_LIMIT,
    is_text,
    scan_python,
)

__all__ = [
    "ENGINE_ENV",
    "SCAN_LIMIT",
    "RULES",
    "ContentCheck",
    "content_engine",
    "is_text",
    "name_reason",
    "scan_content",
    "scan_python",
    "secret_paths",
    "secret_reason",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- by name

# Extensions of source code and documents: a file with one of these is code the agent needs
# (``secrets.py``, ``credentials.ts``, ``docs/secrets.md``), never a credentials file by name.


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_SOURCE_EXT = _words(
    """py pyi pyx js mjs cjs jsx ts tsx mts cts go rs rb java kt kts scala groovy gradle c h
    cc cpp cxx hpp hh cs fs php swift m mm dart ex exs erl hrl hs lua pl pm r jl clj cljs
    elm vue svelte astro md markdown rst adoc html htm css scss sass less ipynb sql graphql
    proto tf hcl nix zig nim v sv vhd pyc pyo class"""
)
# template copies are meant to be shared: .env.example, credentials.json.sample ...
_TEMPLATE_EXT = _words("example examples sample template tpl dist defaults schema in")
# editor and manual backups keep the original's family: key.pem.bak, id_rsa.old, .env~
_BACKUP_EXT = _words(
    "bak backup bkp old orig save sav tmp temp swp swo copy prev previous new 1 2 3"
)

_ENV = "environment file"
_KEY = "private key"
_STORE = "key store"
_CRED = "credentials file"
_TOOL = "cloud or tool credentials"
_TF = "terraform variables or state"
_SECRETS = "secrets file"

# whole directories that hold only credentials (any file inside, at any depth)
_SECRET_DIRS = {
    ".ssh": "SSH directory",
    ".gnupg": "GnuPG directory",
    ".aws": _TOOL,
    ".azure": _TOOL,
    ".kube": _TOOL,
    ".password-store": _TOOL,
    ".gcloud": _TOOL,
}
# directories under .config/ that hold a tool's tokens
_CONFIG_DIRS = {"gcloud", "gh", "op", "doctl", "hub", "sops", "configstore"}
# directories whose non-source files are secrets (docker compose secrets/, gcloud's)
_DATA_SECRET_DIRS = {"secrets": _SECRETS, ".secrets": _SECRETS, "legacy_credentials": _TOOL}

_EXACT = {
    ".envrc": _ENV,
    ".dev.vars": _ENV,
    ".netrc": _CRED,
    "_netrc": _CRED,
    ".pgpass": _CRED,
    ".my.cnf": _CRED,
    ".mylogin.cnf": _CRED,
    ".git-credentials": _CRED,
    ".gitcookies": _CRED,
    ".npmrc": _TOOL,
    ".pypirc": _TOOL,
    ".dockercfg": _TOOL,
    ".vault-token": _TOOL,
    ".boto": _TOOL,
    ".s3cfg": _TOOL,
    "rclone.conf": _TOOL,
    ".rclone.conf": _TOOL,
    ".htpasswd": _CRED,
    "htpasswd": _CRED,
    ".terraformrc": _TOOL,
    "terraform.rc": _TOOL,
    "credentials.tfrc.json": _TOOL,
    "application_default_credentials.json": _TOOL,
    "credentials.db": _TOOL,
    "access_tokens.db": _TOOL,
    "accesstokens.json": _TOOL,
    "msal_token_cache.json": _TOOL,
    "msal_token_cache.bin": _TOOL,
    "keystore.properties": _STORE,
    "key.properties": _STORE,
    "settings-security.xml": _TOOL,
    "secring.gpg": _KEY,
    "secring.skr": _KEY,
    "wallet.dat": _KEY,
    "kubeconfig": _TOOL,
    ".kubeconfig": _TOOL,
}
# (parent directory, file name): a tool's credentials file copied out of its home
_IN_DIR = {
    ("kube", "config"): _TOOL,
    (".docker", "config.json"): _TOOL,
    ("gh", "hosts.yml"): _TOOL,
    ("gh", "hosts.yaml"): _TOOL,
    (".m2", "settings.xml"): _TOOL,
    (".gradle", "gradle.properties"): _TOOL,
    (".config", "hub"): _TOOL,
    (".composer", "auth.json"): _TOOL,
    ("composer", "auth.json"): _TOOL,
}
_KEY_EXT = {
    "pem": _KEY,
    "key": _KEY,
    "p8": _KEY,
    "pkcs8": _KEY,
    "ppk": _KEY,
    "p12": _STORE,
    "pfx": _STORE,
    "pkcs12": _STORE,
    "jks": _STORE,
    "keystore": _STORE,
    "bks": _STORE,
    "jceks": _STORE,
    "kdbx": _STORE,
    "keytab": _STORE,
    "keychain": _STORE,
    "keychain-db": _STORE,
    "ovpn": _KEY,
    "tfvars": _TF,
    "tfstate": _TF,
    "kubeconfig": _TOOL,
}
_SSH_KEY = re.compile(r"(?:id_|.+_)(?:rsa|dsa|ecdsa|ed25519|xmss)(?:_sk)?(?:[._-].*)?$|id_rsa.*$")
_KEYISH_STEMS = {"key", "privkey", "private", "privatekey", "deploykey", "secretkey", "apikey"}
_KEYISH_EXT = frozenset({"", "txt", "asc", "gpg", "pgp", "json", "priv"})


def _strip_backup(name: str) -> str:
    name = name.strip("#").rstrip("~")
    while True:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and ext in _BACKUP_EXT:
            name = stem.rstrip("~")
            continue
        return name


def _keyish(stem: str) -> bool:
    return (
        stem in _KEYISH_STEMS
        or stem.endswith(("_key", "-key", ".key", "_privkey", "-privkey"))
        or stem.startswith(("private_key", "private-key", "privatekey"))
    )


def name_reason(path: str) -> str | None:
    """Why ``path`` (relative, ``/``-separated) is a secret by its name alone, or None.

    Pure and fast (a few set look-ups): called for every file of every upload.
    """
    cut = path.rfind("/")
    base = path[cut + 1 :].lower()
    dot = base.rfind(".")
    ext = base[dot + 1 :] if dot > 0 else ""
    if ext in _SOURCE_EXT and "/." not in "/" + path[: cut + 1]:
        return None  # the common case: source code outside any dot-directory
    dirs = path[: cut + 1].lower().split("/")[:-1] if cut >= 0 else []
    for i, d in enumerate(dirs):
        if d in _SECRET_DIRS:
            return f"name: {_SECRET_DIRS[d]} ({d}/)"
        if d == ".config" and i + 1 < len(dirs) and dirs[i + 1] in _CONFIG_DIRS:
            return f"name: {_TOOL} (.config/{dirs[i + 1]}/)"
    if ext in _SOURCE_EXT:
        return None
    for d in dirs:
        if d in _DATA_SECRET_DIRS:
            return f"name: {_DATA_SECRET_DIRS[d]} ({d}/)"
    parent = dirs[-1] if dirs else ""
    name = _strip_backup(base)
    parts = name.split(".")
    last = parts[-1] if len(parts) > 1 else ""
    if last in _TEMPLATE_EXT:
        return None
    label = _name_family(name, parts, last, parent)
    return f"name: {label}" if label else None


def _name_family(name: str, parts: list[str], last: str, parent: str) -> str | None:
    if name in _EXACT:
        return _EXACT[name]
    if (parent, name) in _IN_DIR:
        return _IN_DIR[(parent, name)]
    exts = parts[1:]
    if "env" in exts and last not in _SOURCE_EXT:
        return _ENV  # .env, .env.local, prod.env, secrets.env, .prod.env.local
    for e in reversed(exts):
        if e in _KEY_EXT:
            return _KEY_EXT[e]
    if _SSH_KEY.match(name) and last != "pub":
        return _KEY
    stem = name[: -len(last) - 1] if last else name
    if last in _KEYISH_EXT and (_keyish(stem) or (last in {"asc", "gpg", "pgp"} and _priv(stem))):
        return _KEY
    if name.startswith("secring."):
        return _KEY
    squashed = stem.replace("-", "").replace("_", "").replace(".", "")
    if stem in ("credentials", ".credentials") or stem.endswith(("_credentials", "-credentials")):
        return _CRED
    if last == "csv" and ("accesskeys" in squashed or "credentials" in squashed):
        return _CRED
    if last in _KEYISH_EXT and (
        stem in ("token", ".token", "password", "passwords", ".password", "passwd")
        or stem.endswith(("_token", "-token", "_password", "-password", "_passwd"))
    ):
        return _CRED  # token.json (OAuth), github_token.txt, db_password.txt
    if last == "json" and ("serviceaccount" in squashed or stem.startswith("client_secret")):
        return _TOOL
    if (
        stem in ("secrets", "secret", ".secrets")
        or stem.endswith(("-secret", "_secret", ".secret", "-secrets", "_secrets", ".secrets"))
        or last in ("secret", "secrets")
    ):
        return _SECRETS
    if name.startswith("kubeconfig"):
        return _TOOL
    return None


def _priv(stem: str) -> bool:
    return "priv" in stem or "secret" in stem


# --------------------------------------------------------------------------- by content

#: environment variable choosing the content-check engine: ``auto`` (default: Hyperscan when
#: it can be used here, else pure Python), ``hyperscan`` (required: an error without it) or
#: ``python`` (the pure-Python engine, e.g. to compare)
ENGINE_ENV = "SANDBOXRUN_SECRETS_ENGINE"
_ENGINES = ("auto", "hyperscan", "python")
_warned: list[str] = []


def content_engine(cache_dir: Path | None = None) -> Callable[[bytes], str | None]:
    """The content-check engine for this process, as :data:`ENGINE_ENV` asks.

    Both engines give the same answer (:mod:`.secrets_content`); Hyperscan's is ~6–7× faster.
    Where it cannot be used (no wheel for this platform, an unsupported CPU) the pure-Python
    engine is used and a warning logged once per process. ``cache_dir`` keeps the compiled
    Hyperscan database between processes.
    """
    choice = os.environ.get(ENGINE_ENV, "auto").strip().lower() or "auto"
    if choice not in _ENGINES:
        raise ConfigError(
            f"{ENGINE_ENV}={choice!r} is not a content-check engine",
            f"Use one of: {', '.join(_ENGINES)} (or unset it).",
        )
    if choice == "python":
        return scan_python
    engine = secrets_hs.load_engine(cache_dir)
    if engine is not None:
        return engine
    why = secrets_hs.failure() or "unknown"
    if choice == "hyperscan":
        raise ConfigError(
            f"{ENGINE_ENV}=hyperscan, but {why}",
            "Install it (pip install hyperscan) or unset the variable to use the pure-Python "
            "engine.",
        )
    if not _warned:
        _warned.append(why)
        log.warning("secrets content check: pure-Python engine (slower): %s", why)
    return scan_python


def scan_content(data: bytes) -> str | None:
    """The name of the first high-confidence secret rule ``data`` matches, or None.

    Binary data and data over :data:`SCAN_LIMIT` are not scanned (None). The matched value
    is never returned or logged: callers report the path and the rule only. Uses
    :func:`content_engine`; for many files, get the engine once and call it.
    """
    return content_engine()(data)


# Bump when the content check changes in a way the patterns below do not show, so cached
# "clean" verdicts from older rules are thrown away. 2: the gates of the Python engine no
# longer skip 25-character GitLab tokens or Slack tokens with '-' in their tail.
_SCAN_VERSION = 2
_CACHE_MAGIC = b"sandboxrun-clean-contents 1 "
_CACHE_MAX = 2_000_000  # entries (16 bytes each): start afresh beyond this


def _rules_digest() -> bytes:
    parts = [repr((_SCAN_VERSION, SCAN_LIMIT, _SERVICE_ACCOUNT.pattern))]
    parts += [repr((p.pattern, p.flags)) for p in CHECKS]
    parts += [repr((r.name, r.anchors)) for r in RULES]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32].encode()


class ContentCheck:
    """The content check of one pack: the engine of :func:`content_engine`, and with the
    pure-Python engine a memory of contents found clean, by SHA-256.

    Many sessions on one repository upload the same files again and again (each from a fresh
    worktree, so file stats never repeat; contents do). With ``cache_file`` set and the
    pure-Python engine, a content already found clean by the same rules is not scanned again:
    hashing costs about a seventh of its scan. Hyperscan scans as fast as SHA-256 hashes
    (~1.3 GB/s here), so with it the memory would only add the hashing to a repository's first
    pack: it is not used (and not written), and ``cache_file``'s directory keeps the compiled
    Hyperscan database instead. Only clean verdicts are cached; a secret is found afresh every
    time. The cache is best effort: unreadable, foreign or stale (other rules) files are
    ignored.
    """

    def __init__(self, cache_file: Path | None = None) -> None:
        #: the engine (see :func:`content_engine`)
        self.scan = content_engine(cache_file.parent if cache_file is not None else None)
        if isinstance(self.scan, secrets_hs.HyperscanEngine):
            cache_file = None
        self.cache_file = cache_file
        self.clean: set[bytes] = set()
        self.added = 0
        self._header = _CACHE_MAGIC + _rules_digest() + b"\n"
        if cache_file is not None:
            with contextlib.suppress(OSError):
                raw = cache_file.read_bytes()
                if raw.startswith(self._header):
                    body = memoryview(raw)[len(self._header) :]
                    self.clean = {bytes(body[i : i + 16]) for i in range(0, len(body) - 15, 16)}

    def __call__(self, data: bytes) -> str | None:
        """The rule ``data`` matches, or None (see :func:`scan_content`)."""
        if self.cache_file is None:
            return self.scan(data)
        if len(data) > SCAN_LIMIT or not is_text(data):
            return None  # not scanned (see scan_content)
        key = hashlib.sha256(data).digest()[:16]
        if key in self.clean:
            return None
        rule = self.scan(data)
        if rule is None:
            self.clean.add(key)
            self.added += 1
        return rule

    def save(self) -> None:
        """Write the cache back (atomically) if anything was added; errors are ignored."""
        if self.cache_file is None or not self.added:
            return
        entries = self.clean if len(self.clean) <= _CACHE_MAX else set()
        with contextlib.suppress(OSError):
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache_file.parent, prefix=".scan-cache.")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(self._header + b"".join(entries))
                os.replace(tmp, self.cache_file)
            except OSError:
                os.unlink(tmp)
        self.added = 0


def secret_reason(path: str, data: bytes | None) -> str | None:
    """The reason ``path`` (with contents ``data``, if read) must not leave the machine."""
    reason = name_reason(path)
    if reason is None and data is not None:
        rule = scan_content(data)
        if rule is not None:
            reason = f"content: {rule}"
    return reason


def secret_paths(root: Path, names: list[str]) -> list[str]:
    """Those of ``names`` (relative to ``root``) that the secrets check keeps out.

    By name, then by the content of the file as it is in ``root`` now (regular files only,
    read without following links); ``.sandboxruninclude`` at ``root`` brings a file back.
    """
    try:
        lines = (root / ".sandboxruninclude").read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    include = pathspec.GitIgnoreSpec.from_lines(lines, backend="simple")  # see candidates.Spec
    found = []
    scan = content_engine()
    for name in names:
        secret = name_reason(name) is not None
        if not secret:
            try:
                fd = os.open(root / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue  # deleted, a link or unreadable: nothing to scan
            try:
                regular = stat.S_ISREG(os.fstat(fd).st_mode)
                data = os.read(fd, SCAN_LIMIT + 1) if regular else b""
            finally:
                os.close(fd)
            secret = scan(data) is not None
        if secret and not include.match_file(name):
            found.append(name)
    return found
