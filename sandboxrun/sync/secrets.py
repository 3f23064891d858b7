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
  matched value.

Speed: the content check runs on every text file while packing, so the common case (no
secret) costs a few C-level passes: ``find`` for ``PRIVATE KEY`` and the two Azure anchors,
and two ``translate`` + ``find`` passes that look for a long run of token characters, which
every other token rule needs. Only a file that passes a prefilter has its rules' literal
anchors looked for, and only one with an anchor is searched with the rule's expression.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pathspec

__all__ = [
    "SCAN_LIMIT",
    "RULES",
    "ContentCheck",
    "is_text",
    "name_reason",
    "scan_content",
    "secret_paths",
    "secret_reason",
]

#: files larger than this are not content-scanned (secrets live in small files; the cap bounds
#: the cost of a huge generated file)
SCAN_LIMIT = 1 << 20

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


@dataclass(frozen=True)
class Rule:
    """A content rule: a name to report and a pattern for the secret (never reported).

    ``anchors`` are literal substrings one of which every match contains: a C-level ``in``
    test on them decides whether the regular expression needs to run at all.
    """

    name: str
    anchors: tuple[bytes, ...]
    pattern: re.Pattern[bytes]


def _r(name: str, anchors: tuple[bytes, ...], pattern: bytes) -> Rule:
    return Rule(name, anchors, re.compile(pattern))


# Token formats as published by their issuers (and as used by gitleaks / detect-secrets),
# anchored on their fixed prefixes and exact alphabets so ordinary code never matches. Group
# 1 is the token (checked against placeholders). Two groups by alphabet, see the prefilters.
_ALNUM_RULES: tuple[Rule, ...] = (
    _r("aws-access-key-id", (b"AKIA", b"ASIA", b"ABIA", b"ACCA"),
       rb"(?<![A-Za-z0-9])((?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})(?![A-Za-z0-9])"),
    _r("github-token", (b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"),
       rb"(?<![A-Za-z0-9_])(gh[pousr]_[A-Za-z0-9]{36,251})(?![A-Za-z0-9_])"),
    _r("github-token", (b"github_pat_",),
       rb"(?<![A-Za-z0-9_])(github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})(?![A-Za-z0-9_])"),
    _r("slack-token", (b"xox",), rb"(?<![A-Za-z0-9])(xox[abposr]-[0-9]{6,}-[0-9A-Za-z-]{20,})"),
    _r("slack-webhook", (b"hooks.slack.com",),
       rb"hooks\.slack\.com/services/(T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{20,})"),
    _r("stripe-secret-key", (b"k_live_",),
       rb"(?<![A-Za-z0-9])([rs]k_live_[A-Za-z0-9]{24,})(?![A-Za-z0-9])"),
    _r("openai-api-key", (b"T3BlbkFJ",),
       rb"(?<![A-Za-z0-9_-])(sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20})(?![A-Za-z0-9])"),
    _r("npm-token", (b"npm_",), rb"(?<![A-Za-z0-9_])(npm_[A-Za-z0-9]{36})(?![A-Za-z0-9])"),
    _r("e2b-api-key", (b"e2b_",), rb"(?<![A-Za-z0-9_])(e2b_[0-9a-f]{40})(?![A-Za-z0-9])"),
    _r("huggingface-token", (b"hf_",), rb"(?<![A-Za-z0-9_])(hf_[A-Za-z]{34})(?![A-Za-z0-9_])"),
    _r("digitalocean-token", (b"_v1_",),
       rb"(?<![A-Za-z0-9_])(do[opr]_v1_[a-f0-9]{64})(?![A-Za-z0-9])"),
)  # fmt: skip
_B64URL_RULES: tuple[Rule, ...] = (
    _r("gitlab-token", (b"glpat-", b"gldt-", b"glrt-", b"glptt-"),
       rb"(?<![A-Za-z0-9_-])(gl(?:pat|dt|rt|ptt)-[A-Za-z0-9_-]{20,})"),
    _r("google-api-key", (b"AIza",),
       rb"(?<![A-Za-z0-9_-])(AIza[0-9A-Za-z_-]{35})(?![A-Za-z0-9_-])"),
    _r("google-oauth-client-secret", (b"GOCSPX-",),
       rb"(?<![A-Za-z0-9_-])(GOCSPX-[A-Za-z0-9_-]{28})(?![A-Za-z0-9_-])"),
    _r("anthropic-api-key", (b"sk-ant-",),
       rb"(?<![A-Za-z0-9_-])(sk-ant-(?:api|admin|oat|ort)[0-9]{2}-[A-Za-z0-9_-]{32,})"),
    _r("openai-api-key", (b"sk-proj-", b"sk-svcacct-", b"sk-admin-"),
       rb"(?<![A-Za-z0-9_-])(sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,})"),
    _r("sendgrid-api-key", (b"SG.",),
       rb"(?<![A-Za-z0-9_-])(SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43})(?![A-Za-z0-9_-])"),
    _r("pypi-token", (b"pypi-AgE",), rb"(pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,})"),
)  # fmt: skip
# Keys in base64 (so no long run is guaranteed), found by their long literal anchors alone.
_ANCHORED_RULES: tuple[Rule, ...] = (
    _r("azure-storage-key", (b"AccountKey=",),
       rb"AccountKey=([A-Za-z0-9+/]{86}==)"),
    _r("azure-shared-access-key", (b"SharedAccessKey=",),
       rb"SharedAccessKey=([A-Za-z0-9+/]{43}=)"),
)  # fmt: skip
#: every token rule, for documentation and tests
RULES: tuple[Rule, ...] = _ALNUM_RULES + _B64URL_RULES + _ANCHORED_RULES

# A key block: the armour line and at least 40 base64 characters of body soon after it
# (a placeholder such as "MIIE..." or "<your key>" has no such body). PEM, OpenSSH, PKCS#8,
# encrypted PEM and PGP private key blocks; inside JSON the newlines are "\n" escapes.
_KEY_BLOCK = re.compile(
    rb"-----BEGIN[ A-Z0-9]{0,30}PRIVATE KEY(?: BLOCK)?-----.{0,400}?[A-Za-z0-9+/]{40}", re.DOTALL
)
_SERVICE_ACCOUNT = re.compile(rb'"type"\s*:\s*"service_account"')

# Prefilters. Every token rule needs a run of 20+ [A-Za-z0-9] (AWS, GitHub, Slack, Stripe, npm,
# E2B, OpenAI classic, Hugging Face, DigitalOcean) or of 26+ [A-Za-z0-9_-] (GitLab, Google,
# Anthropic, OpenAI project keys, SendGrid, PyPI): translate maps those characters to "a" and
# everything else to a space, so one C-level find answers "could there be a token here".
_ALNUM = bytes(0x61 if chr(i).isascii() and chr(i).isalnum() else 0x20 for i in range(256))
_B64URL = bytes(
    0x61 if chr(i).isascii() and (chr(i).isalnum() or chr(i) in "-_") else 0x20 for i in range(256)
)
_RUN_ALNUM = b"a" * 20
_RUN_B64URL = b"a" * 26


def is_text(data: bytes) -> bool:
    """Git's rule of thumb: a NUL byte in the first 8 KiB means binary."""
    return data.find(b"\0", 0, 8192) < 0  # no 8 KiB slice copied


def _placeholder(value: bytes) -> bool:
    """Documentation values: EXAMPLE keys, xxxx-filled, counting or low-variety strings."""
    upper = value.upper()
    return (
        any(word in upper for word in (b"EXAMPLE", b"XXXXXXXX", b"ABCDEFGH", b"12345678"))
        or len(set(value)) < 10
    )


def scan_content(data: bytes) -> str | None:
    """The name of the first high-confidence secret rule ``data`` matches, or None.

    Binary data and data over :data:`SCAN_LIMIT` are not scanned (None). The matched value
    is never returned or logged: callers report the path and the rule only.
    """
    if len(data) > SCAN_LIMIT or not is_text(data):
        return None
    if b"PRIVATE KEY" in data:
        m = _KEY_BLOCK.search(data)
        if m is not None:
            return "gcp-service-account" if _SERVICE_ACCOUNT.search(data) else "private-key"
    if _RUN_ALNUM in data.translate(_ALNUM):
        rule = _first_match(_ALNUM_RULES, data)
        if rule is not None:
            return rule
    if _RUN_B64URL in data.translate(_B64URL):
        rule = _first_match(_B64URL_RULES, data)
        if rule is not None:
            return rule
    return _first_match(_ANCHORED_RULES, data)


def _first_match(rules: tuple[Rule, ...], data: bytes) -> str | None:
    for rule in rules:
        if any(a in data for a in rule.anchors):
            for m in rule.pattern.finditer(data):
                if not _placeholder(m.group(1)):
                    return rule.name
    return None


# Bump when the content check changes in a way the patterns below do not show, so cached
# "clean" verdicts from older rules are thrown away.
_SCAN_VERSION = 1
_CACHE_MAGIC = b"sandboxrun-clean-contents 1 "
_CACHE_MAX = 2_000_000  # entries (16 bytes each): start afresh beyond this


def _rules_digest() -> bytes:
    parts = [repr((_SCAN_VERSION, SCAN_LIMIT, _KEY_BLOCK.pattern, _SERVICE_ACCOUNT.pattern))]
    parts += [repr((r.name, r.anchors, r.pattern.pattern)) for r in RULES]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32].encode()


class ContentCheck:
    """:func:`scan_content` that remembers contents it found clean, by SHA-256.

    Many sessions on one repository upload the same files again and again (each from a fresh
    worktree, so file stats never repeat; contents do). With ``cache_file`` set, a content
    already found clean by the same rules is not scanned again: hashing costs about a quarter
    of a scan. Only clean verdicts are cached; a secret is found afresh every time. The cache
    is best effort: unreadable, foreign or stale (other rules) files are ignored.
    """

    def __init__(self, cache_file: Path | None = None) -> None:
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
        if len(data) > SCAN_LIMIT or not is_text(data):
            return None  # not scanned (see scan_content)
        if self.cache_file is None:
            return scan_content(data)
        key = hashlib.sha256(data).digest()[:16]
        if key in self.clean:
            return None
        rule = scan_content(data)
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
    include = pathspec.GitIgnoreSpec.from_lines(lines)
    found = []
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
            secret = scan_content(data) is not None
        if secret and not include.match_file(name):
            found.append(name)
    return found
