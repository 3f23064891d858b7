"""The secrets check: families of names, content rules, and both applied to uploads and carries.

Tokens are assembled at run time (prefix + body) so this file itself holds none: packing this
repository must not leave its own tests out.
"""

from __future__ import annotations

import random
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest
from sbr_testlib import git

from sandboxrun.sync.pack import pack_worktree, select_files
from sandboxrun.sync.secrets import (
    RULES,
    SCAN_LIMIT,
    name_reason,
    scan_content,
    secret_paths,
    secret_reason,
)

ROOT = Path(__file__).resolve().parent.parent
rng = random.Random(7)
ALNUM = string.ascii_letters + string.digits


def rand(n: int, alphabet: str = ALNUM) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


# --------------------------------------------------------------------------- by name

SECRET_NAMES = [
    # environment files, any prefix or suffix, any depth
    ".env",
    "prod.env",
    "secrets.env",
    "config/.env.production",
    ".env.local",
    "deploy/staging.env",
    ".prod.env.local",
    "PROD.ENV",
    ".envrc",
    ".env~",
    "app/.env.bak",
    ".dev.vars",
    # private keys, also as backups
    "key.pem.bak",
    "certs/server.pem",
    "tls/server.key",
    "private-key.asc",
    "keys/release-private.gpg",
    "deploy_key",
    "ops/deploy-key",
    "id_rsa",
    "backup/id_ed25519.old",
    "id_ecdsa_sk",
    "github_rsa",
    "etc/ssh_host_ed25519_key",
    "#server.key#",
    ".server.key.swp",
    "server.key~",
    "AuthKey_ABC123.p8",
    "putty.ppk",
    "signing/privkey.txt",
    # key stores
    "android/release.jks",
    "app.keystore",
    "client.p12",
    "cert.pfx",
    "android/key.properties",
    "passwords.kdbx",
    "vpn/office.ovpn",
    # cloud and tool credentials, in their dot-dirs or copied out of them
    "aws/credentials",
    ".aws/credentials",
    "home/.aws/config",
    ".kube/config",
    "kube/config",
    "ops/prod.kubeconfig",
    "kubeconfig.yaml",
    ".config/gh/hosts.yml",
    "gh/hosts.yml",
    ".config/gcloud/credentials.db",
    "gcloud/legacy_credentials/me@example.com/adc.json",
    "application_default_credentials.json",
    ".azure/msal_token_cache.json",
    ".docker/config.json",
    ".npmrc",
    ".pypirc",
    ".netrc",
    ".pgpass",
    ".git-credentials",
    ".vault-token",
    ".ssh/known_hosts",
    ".gnupg/pubring.kbx",
    ".m2/settings.xml",
    ".terraformrc",
    "credentials.tfrc.json",
    # terraform variables and state
    "terraform.tfvars",
    "infra/prod.auto.tfvars",
    "infra/vars.tfvars.json",
    "terraform.tfstate",
    "terraform.tfstate.backup",
    # secrets / credentials / service-account data files
    "service-account.json",
    "gcp/my-service_account-key.json",
    "sa-key.json",
    "client_secret_1234.apps.googleusercontent.com.json",
    "credentials.json",
    "credentials.yml",
    "config/credentials.xml",
    "creds/accessKeys.csv",
    "secrets.yaml",
    "conf/secrets.toml",
    "k8s/db-secret.yaml",
    "k8s/app_secrets.json",
    "secrets/db_password.txt",
    ".htpasswd",
    "token.json",
    "secrets/github_token.txt",
    "ops/db_password",
    "passwords.txt",
    "apikey.txt",
    "config/aws_credentials",
]

# Ordinary files whose names merely look related: they must keep uploading.
ORDINARY_NAMES = [
    "env.py",
    "src/env/index.ts",
    "vite-env.d.ts",
    "environment.prod.ts",
    "keyboard.ts",
    "hotkeys.json",
    "monkey.py",
    "docs/secrets.md",
    "secrets.py",
    "app/secrets/__init__.py",
    "credentials.ts",
    "lib/credentials_test.go",
    "key_test.go",
    "token.go",
    "tokenizer.json",
    ".env.example",
    ".env.sample",
    "config/.env.template",
    "terraform.tfvars.example",
    "credentials.json.sample",
    "id_rsa.pub",
    "deploy/id_ed25519.pub",
    "deploy_key.pub",
    "README.md",
    "package.json",
    "config.json",
    "docker/config.json",
    ".docker/Dockerfile",
    "Makefile",
    "settings.py",
    "infra/main.tf",
    "secrets.enc.yaml",
    ".github/workflows/ci.yml",
    "keys.txt",
    "src/config",
    "tokens.json",
    "design/tokens/colors.json",
    "src/token_bucket.rs",
    "password_reset.html",
    "docs/password-policy.md",
]


@pytest.mark.parametrize("path", SECRET_NAMES)
def test_secret_families_are_caught_by_name(path: str) -> None:
    reason = name_reason(path)
    assert reason is not None and reason.startswith("name: "), path


@pytest.mark.parametrize("path", ORDINARY_NAMES)
def test_ordinary_files_are_not_secrets_by_name(path: str) -> None:
    assert name_reason(path) is None


# --------------------------------------------------------------------------- by content


def _pem(kind: str = "PRIVATE KEY") -> str:
    body = "\n".join(rand(64, ALNUM + "+/") for _ in range(8))
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n"


TOKENS = {
    "private-key": lambda: _pem(),
    "private-key ": lambda: _pem("RSA PRIVATE KEY"),
    "private-key  ": lambda: _pem("OPENSSH PRIVATE KEY"),
    "private-key   ": lambda: _pem("PGP PRIVATE KEY BLOCK").replace(
        "KEY BLOCK-----\n", "KEY BLOCK-----\nVersion: 1\n\n", 1
    ),
    "gcp-service-account": lambda: (
        '{"type": "service_account", "project_id": "p", "private_key": "'
        + _pem().replace("\n", "\\n")
        + '", "client_email": "x@p.iam.gserviceaccount.com"}'
    ),
    "aws-access-key-id": lambda: "AKIA" + rand(16, string.ascii_uppercase + "234567"),
    "aws-access-key-id ": lambda: "ASIA" + rand(16, string.ascii_uppercase + "234567"),
    "github-token": lambda: "ghp_" + rand(36),
    "github-token ": lambda: "github_pat_" + rand(22) + "_" + rand(59),
    "gitlab-token": lambda: "glpat-" + rand(20, ALNUM + "-_"),
    "slack-token": lambda: (
        "xoxb-" + rand(12, string.digits) + "-" + rand(13, string.digits) + "-" + rand(24)
    ),
    "slack-webhook": lambda: (
        "https://hooks.slack.com/services/T"
        + rand(8, string.ascii_uppercase)
        + "/B"
        + rand(8, string.ascii_uppercase)
        + "/"
        + rand(24)
    ),
    "stripe-secret-key": lambda: "sk_" + "live_" + rand(24),
    "google-api-key": lambda: "AIza" + rand(35, ALNUM + "-_"),
    "google-oauth-client-secret": lambda: "GOCSPX-" + rand(28, ALNUM + "-_"),
    "anthropic-api-key": lambda: "sk-ant-" + "api03-" + rand(93, ALNUM + "-_") + "AA",
    "openai-api-key": lambda: "sk-proj-" + rand(156, ALNUM + "-_"),
    "openai-api-key ": lambda: "sk-" + rand(20) + "T3Blbk" + "FJ" + rand(20),
    "npm-token": lambda: "npm_" + rand(36),
    "pypi-token": lambda: "pypi-" + "AgEIcHlwaS5vcmc" + rand(60, ALNUM + "-_"),
    "e2b-api-key": lambda: "e2b_" + rand(40, "0123456789abcdef"),
    "sendgrid-api-key": lambda: "SG." + rand(22, ALNUM + "-_") + "." + rand(43, ALNUM + "-_"),
    "huggingface-token": lambda: "hf_" + rand(34, string.ascii_letters),
    "digitalocean-token": lambda: "dop_v1_" + rand(64, "0123456789abcdef"),
    "azure-storage-key": lambda: (
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey="
        + rand(86, ALNUM + "+/")
        + "==;EndpointSuffix=core.windows.net"
    ),
    "azure-shared-access-key": lambda: (
        "Endpoint=sb://x.servicebus.windows.net/;"
        "SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey="
        + rand(43, ALNUM + "+/")
        + "="
    ),
}
CONTEXTS = [
    'API_KEY = "{}"\n',
    "token: {}\n",
    "export SECRET='{}'\n",
    "<value>{}</value>\n",
    '{{"key": "{}"}}',
    "{}\n",
]


@pytest.mark.parametrize("rule", sorted(TOKENS))
def test_each_rule_finds_its_token_in_any_context(rule: str) -> None:
    filler = "def handler(request):\n    return render(request, 'x.html')\n" * 50
    for context in CONTEXTS:
        for _ in range(5):  # fresh random bodies: '-' and '_' anywhere in base64url tokens
            token = TOKENS[rule]()
            data = (filler + context.format(token) + filler).encode()
            assert scan_content(data) == rule.strip(), (rule, context)


def test_every_rule_is_tested() -> None:
    assert {r.name for r in RULES} <= {k.strip() for k in TOKENS}


NOT_SECRETS = [
    # documentation placeholders and well-known examples
    "AKIAIOSFODNN7EXAMPLE",
    "aws_access_key_id = AKIAXXXXXXXXXXXXXXXX",
    "ghp_" + "x" * 36,
    "ghp_" + "0123456789" * 3 + "abcdef",
    "-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----",
    "-----BEGIN RSA PRIVATE KEY-----\n<your key here>\n",
    "-----BEGIN PUBLIC KEY-----\n" + "A" * 10 + rand(64) + "\n-----END PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----\n" + rand(64) + "\n",
    'if key.startswith("-----BEGIN PRIVATE KEY-----"):',
    # prefixes inside longer identifiers or words
    "task-ant-api03-" + rand(40),
    "mask_live_" + rand(30),
    "xAKIA" + rand(16, string.ascii_uppercase),
    "npm_" + rand(20),
    # JWTs are not reported (test fixtures are full of them)
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    # ordinary long things: hashes, UUIDs, base64 blobs, identifiers
    "sha256-" + rand(43, ALNUM + "+/") + "=",
    "commit " + rand(40, "0123456789abcdef"),
    "550e8400-e29b-41d4-a716-446655440000",
    "getElementsByClassNameAndSomethingElseEntirely",
    "test_that_a_very_long_snake_case_function_name_is_fine",
    "data:image/png;base64," + rand(400, ALNUM + "+/"),
]


@pytest.mark.parametrize("text", NOT_SECRETS)
def test_placeholders_and_ordinary_text_are_not_secrets(text: str) -> None:
    assert scan_content(("x = 1\n" + text + "\n").encode()) is None


def test_binary_and_oversized_files_are_not_scanned() -> None:
    token = TOKENS["github-token"]().encode()
    assert scan_content(b"\0\1\2" + token) is None
    big = b"# " + b"a" * SCAN_LIMIT + b"\n" + token
    assert scan_content(big) is None
    assert scan_content(big[-1000:]) == "github-token"


def test_the_binary_check_looks_at_the_first_8_kib_only() -> None:
    """A NUL past 8 KiB (a text file with one odd byte) does not hide a secret; one inside
    8 KiB makes the file binary, as git decides."""
    token = TOKENS["github-token"]().encode()
    assert scan_content(b"x" * 8192 + b"\0" + b"\n" + token) == "github-token"
    assert scan_content(b"x" * 8191 + b"\0" + b"\n" + token) is None
    assert scan_content(b"x" * 9000 + b"\n" + token + b"\n" + b"\0") == "github-token"


def test_reasons_name_the_rule_never_the_value() -> None:
    token = TOKENS["anthropic-api-key"]()
    reason = secret_reason("src/settings.py", f"KEY = '{token}'\n".encode())
    assert reason == "content: anthropic-api-key"
    assert token not in reason and token[:12] not in reason
    assert secret_reason("prod.env", None) == "name: environment file"


def test_this_repository_has_no_content_findings() -> None:
    """Zero false positives on real source: sandboxrun's own code, tests, docs and fixtures."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True)
    # The corpus is what git tracks (a tree walk would scan .venv's third-party code). A copy
    # whose .git belongs to another user (`cp -r` of a worktree) makes git refuse: say so.
    assert listed.returncode == 0, (
        f"git ls-files failed in {ROOT}: {listed.stderr.decode(errors='replace').strip()} "
        "(run the suite from a git clone this user owns: docs/testing.md)"
    )
    files = listed.stdout.split(b"\0")
    hits = {}
    for raw in files:
        path = ROOT / raw.decode()
        if raw and path.is_file() and not path.is_symlink():
            rule = scan_content(path.read_bytes())
            if rule is not None:
                hits[raw.decode()] = rule
    assert hits == {}


# --------------------------------------------------------------------------- in uploads


def _repo(tmp_path: Path) -> Path:
    root = tmp_path / "r"
    root.mkdir(parents=True)
    git(root, "init", "-q")
    (root / "app.py").write_text("print('hi')\n")
    (root / "settings.py").write_text(f"STRIPE = '{TOKENS['stripe-secret-key']()}'\n")
    (root / "keys").mkdir()
    (root / "keys" / "notes.txt").write_text(TOKENS["private-key"]())
    (root / "fixture.bin").write_bytes(b"\0" + TOKENS["github-token"]().encode())
    (root / "prod.env").write_text("X=1\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    (root / "untracked.yml").write_text(f"token: {TOKENS['gitlab-token']()}\n")
    return root


EXPECTED = {
    "keys/notes.txt": "content: private-key",
    "prod.env": "name: environment file",
    "settings.py": "content: stripe-secret-key",
    "untracked.yml": "content: gitlab-token",
}


def test_pack_leaves_out_secrets_by_content_with_reasons(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    sel = select_files(root)
    assert sel.secret_reasons == EXPECTED
    assert sel.excluded_secrets == sorted(EXPECTED)
    assert sel.files == ["app.py", "fixture.bin"]
    for given in (None, sel):  # selecting while packing, and packing a given selection
        res = pack_worktree(root, tmp_path / "o.tar.gz", selection=given)
        assert res.selection.secret_reasons == EXPECTED
        assert res.selection.files == ["app.py", "fixture.bin"]
        listing = subprocess.run(
            ["tar", "-tzf", str(tmp_path / "o.tar.gz")], capture_output=True, text=True
        ).stdout.split()
        assert sorted(listing) == ["app.py", "fixture.bin"]


def test_pack_notices_a_secret_written_after_selection(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    sel = select_files(root)
    (root / "app.py").write_text(f"KEY = '{TOKENS['npm-token']()}'\n")
    res = pack_worktree(root, tmp_path / "o.tar.gz", selection=sel)
    assert res.selection.secret_reasons["app.py"] == "content: npm-token"
    assert "app.py" not in res.selection.files


def test_sandboxruninclude_brings_a_content_secret_in_on_purpose(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    (root / ".sandboxruninclude").write_text("settings.py\nprod.env\n")
    sel = pack_worktree(root, tmp_path / "o.tar.gz").selection
    assert {"settings.py", "prod.env"} <= set(sel.files)
    assert {"settings.py", "prod.env"} <= set(sel.included_on_purpose)
    assert set(sel.secret_reasons) == {"keys/notes.txt", "untracked.yml"}


def test_pack_list_prints_excluded_files_with_reasons_on_stderr(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "sandboxrun", "pack", "--list"],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["app.py", "fixture.bin"]
    for path, reason in EXPECTED.items():
        assert f"excluded: {path} ({reason})" in proc.stderr
    for token_file in ("settings.py", "untracked.yml"):  # the reason, never the value
        value = max(re.findall(r"[A-Za-z0-9_-]+", (root / token_file).read_text()), key=len)
        assert value not in proc.stderr + proc.stdout


# --------------------------------------------------------------------------- carried changes


def test_secret_paths_for_carried_changes(tmp_path: Path) -> None:
    root = tmp_path / "c"
    (root / "src").mkdir(parents=True)
    files = {
        "prod.env": "A=1\n",
        "deploy_key": "x\n",
        "src/conf.py": f"AWS = '{TOKENS['aws-access-key-id']()}'\n",
        "src/app.py": "print(1)\n",
        "notes.md": "see .env.example\n",
        ".env.example": "A=\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "link.py").symlink_to("/etc/hostname")
    names = [*files, "link.py", "deleted.py"]
    assert secret_paths(root, names) == ["prod.env", "deploy_key", "src/conf.py"]
    (root / ".sandboxruninclude").write_text("deploy_key\n")
    assert secret_paths(root, names) == ["prod.env", "src/conf.py"]


@pytest.mark.slow
def test_with_changes_never_commits_secrets(cli, repo: Path) -> None:
    """--with-changes applies the same name and content rules as the upload."""
    (repo / "prod.env").write_text("DB=1\n")
    (repo / "deploy_key").write_text("not really\n")
    (repo / "infra").mkdir()
    (repo / "infra" / "terraform.tfvars").write_text('pw = "x"\n')
    (repo / "src" / "conf.py").write_text(f"TOKEN = '{TOKENS['github-token']()}'\n")
    (repo / "README.md").write_text(f"# project\nkey: {TOKENS['openai-api-key']()}\n")
    (repo / "src" / "ok.py").write_text("OK = 1\n")
    proc = cli("run", "--backend", "local", "--name", "carry", "--with-changes", "--prompt", "look")
    assert proc.returncode == 0, proc.stderr
    files = set(git(repo, "ls-tree", "-r", "--name-only", "sandboxrun/carry").split())
    assert "src/ok.py" in files
    for secret in ("prod.env", "deploy_key", "infra/terraform.tfvars", "src/conf.py"):
        assert secret not in files
        assert secret in proc.stderr  # the user is told what was left behind
    assert git(repo, "show", "sandboxrun/carry:README.md") == "# project\n"
    assert "README.md" in proc.stderr


# --------------------------------------------------------------------------- clean-content cache


def test_clean_contents_are_remembered_across_copies_of_a_tree(tmp_path: Path, monkeypatch) -> None:
    """A fresh worktree with the same contents is not scanned again; changed contents are.
    (The pure-Python engine's memory: Hyperscan scans as fast as the memory hashes.)"""
    from sandboxrun.sync import secrets as secrets_module

    monkeypatch.setenv(secrets_module.ENGINE_ENV, "python")

    scanned: list[bytes] = []
    real = secrets_module.content_engine

    def counting(cache_dir=None):
        engine = real(cache_dir)
        return lambda d: scanned.append(d) or engine(d)

    monkeypatch.setattr(secrets_module, "content_engine", counting)
    cache = tmp_path / "home" / "clean-contents"
    first = _repo(tmp_path / "one")
    res = pack_worktree(first, tmp_path / "a.tar.gz", scan_cache=cache)
    assert res.selection.secret_reasons == EXPECTED and cache.exists()
    assert len(scanned) == 4  # every text file not left out by name, once

    scanned.clear()
    second = _repo(tmp_path / "two")  # new files, new inodes, same clean contents
    (second / "app.py").write_text(f"KEY = '{TOKENS['e2b-api-key']()}'\n")
    res = pack_worktree(second, tmp_path / "b.tar.gz", scan_cache=cache)
    assert res.selection.secret_reasons == {**EXPECTED, "app.py": "content: e2b-api-key"}
    # only what was not seen clean before is scanned: the changed app.py and the three files
    # with secrets (never cached as clean), not the untouched clean files
    assert len(scanned) == 4
    assert all(b"print('hi')" not in d for d in scanned)


def test_a_cache_from_other_rules_or_corrupt_is_ignored(tmp_path: Path, monkeypatch) -> None:
    from sandboxrun.sync.secrets import ENGINE_ENV, ContentCheck

    monkeypatch.setenv(ENGINE_ENV, "python")

    cache = tmp_path / "c"
    token = TOKENS["npm-token"]().encode()
    check = ContentCheck(cache)
    assert check(b"clean\n") is None
    check.save()
    raw = cache.read_bytes()
    assert len(raw.split(b"\n", 1)[1]) == 16
    cache.write_bytes(raw.replace(b"contents 1 ", b"contents 1 0"))  # other rules' digest
    assert ContentCheck(cache).clean == set()
    cache.write_bytes(b"garbage")
    assert ContentCheck(cache).clean == set()
    assert ContentCheck(cache)(b"x = '" + token + b"'\n") == "npm-token"
    assert ContentCheck(tmp_path / "missing" / "c")(b"ok\n") is None


def test_rules_and_families_are_documented() -> None:
    """Every content rule and name family appears in docs/security.md (and --help says where)."""
    from sandboxrun.cli.pack_cmd import PACK_HELP
    from sandboxrun.sync import secrets as s

    docs = (ROOT / "docs" / "security.md").read_text()
    families = {s._ENV, s._KEY, s._STORE, s._CRED, s._TOOL, s._TF, s._SECRETS}
    for label in families | {r.name for r in RULES} | {"gcp-service-account", "private-key"}:
        assert label in docs, label
    assert "docs/security.md" in PACK_HELP
