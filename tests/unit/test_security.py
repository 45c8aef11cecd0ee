"""No credentials in the repository, and the usual key files are ignored by git.

The scan covers every file git would commit: tracked files plus untracked ones that
.gitignore does not exclude, so a key is caught before its first commit. The needles are
assembled from pieces so that this file does not match itself. A line that must hold a
credential-like literal on purpose (a public emulator default, say) can carry the marker
ALLOW_MARKER below, which the reviewer then sees in the diff.
"""

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_BYTES = 5 * 1024 * 1024  # larger files are data, not configuration: skipped
ALLOW_MARKER = "allow" + "-secret"  # e.g. `# allow-secret: emulator default`

DASHES = "-" * 5
PRIVATE = "PRIVATE" + " KEY"
NEEDLES: dict[str, re.Pattern[str]] = {
    "private key block": re.compile(
        DASHES + r"BEGIN (?:[A-Z0-9]+ )*" + PRIVATE + r"(?: BLOCK)?" + DASHES
    ),
    "Google API key": re.compile(r"\b" + "AI" + r"za[0-9A-Za-z_\-]{35}\b"),
    "AWS access key id": re.compile(r"\b(?:" + "AK" + "IA|" + "AS" + r"IA)[0-9A-Z]{16}\b"),
    "Google OAuth client secret": re.compile(r"\b" + "GOC" + r"SPX-[0-9A-Za-z_\-]{28}\b"),
    "GitHub token": re.compile(r"\b" + "gh" + r"[pousr]_[0-9A-Za-z]{36}\b"),
    "Slack token": re.compile(r"\b" + "xo" + r"x[abprs]-[0-9A-Za-z-]{10,}\b"),
    # A literal value assigned to a credential-like name, in code, config or JSON.
    "credential assignment": re.compile(
        r"""(?ix)
        \b(?:[\w-]*[_-])?(?:pass(?:word|wd)?|secret|client[_-]?secret|secret[_-]?key|api[_-]?key|
           access[_-]?token|auth[_-]?token|private[_-]?key(?:[_-]?id)?|aws[_-]?secret[\w-]*)
        \b["']?\s*[:=]\s*
        (?P<quote>["'])(?P<value>[^"'\s]{6,})(?P=quote)
        """
    ),
}
SERVICE_ACCOUNT = re.compile(r'"type"\s*:\s*"service_' + r'account"')
SERVICE_ACCOUNT_KEY = re.compile(r'"private_' + r'key"\s*:\s*"')
# Obvious placeholders are not credentials.
PLACEHOLDER = re.compile(
    r"(?i)^(?:<[^>]*>|\$\{?[\w.-]+\}?|\{\{.*\}\}|x+|\*+|\.+|"
    r"(?:change[_-]?me|example|dummy|placeholder|redacted|your[_-].*|fake[_-]?\w*|test[_-]?\w*))$"
)


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    kind: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind}"


def scan_text(text: str, path: str = "<text>") -> list[Finding]:
    """Credential-looking things in `text`, one Finding per line and kind."""
    findings = []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if ALLOW_MARKER in line:
            continue
        for kind, needle in NEEDLES.items():
            for match in needle.finditer(line):
                value = match.groupdict().get("value")
                if value is not None and PLACEHOLDER.match(value):
                    continue
                findings.append(Finding(path, number, kind))
                break
    account = SERVICE_ACCOUNT.search(text)
    if account and SERVICE_ACCOUNT_KEY.search(text):
        line = text.count("\n", 0, account.start()) + 1
        if ALLOW_MARKER not in lines[line - 1]:
            findings.append(Finding(path, line, "Google service-account key file"))
    return findings


def committable_files() -> list[Path]:
    """What git would commit: tracked files and untracked, non-ignored ones."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [ROOT / name for name in sorted(set(listing.split("\0"))) if name]


def scan_file(path: Path) -> list[Finding]:
    if not path.is_file() or path.stat().st_size > MAX_BYTES:
        return []  # deleted in the work tree, or data
    raw = path.read_bytes()
    if b"\0" in raw[:8192]:
        return []  # binary
    return scan_text(raw.decode("utf-8", errors="replace"), str(path.relative_to(ROOT)))


def test_no_credentials_in_committable_files():
    files = committable_files()
    assert files, "git listed no files"
    findings = [finding for path in files for finding in scan_file(path)]
    assert not findings, "credentials in the repository:\n" + "\n".join(map(str, findings))


# --- the scanner catches what it should, and only that ---------------------------------------

FAKE_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7" * 3


@pytest.mark.parametrize(
    ("planted", "kind"),
    [
        (f"{DASHES}BEGIN {PRIVATE}{DASHES}\n{FAKE_BODY}\n", "private key block"),
        (f"{DASHES}BEGIN RSA {PRIVATE}{DASHES}", "private key block"),
        (f"{DASHES}BEGIN OPENSSH {PRIVATE}{DASHES}", "private key block"),
        (f"{DASHES}BEGIN ENCRYPTED {PRIVATE}{DASHES}", "private key block"),
        (f"{DASHES}BEGIN PGP {PRIVATE} BLOCK{DASHES}", "private key block"),
        ("key = " + "AI" + "za" + "Sy" + "B" * 33, "Google API key"),
        ("AWS_ACCESS_KEY_ID=" + "AK" + "IA" + "Q3EGRIXDAMPLE7XY", "AWS access key id"),
        ("x " + "GOC" + "SPX-" + "a1B2" * 7 + " y", "Google OAuth client secret"),
        ("token: " + "gh" + "p_" + "A1b2C3" * 6, "GitHub token"),
        ("SLACK=" + "xo" + "xb-1234567890-abcdef", "Slack token"),
        ('password = "' + "hunter2" + "-real" + '"', "credential assignment"),
        ('DB_PASSWORD = "' + "hunter2" + "-real" + '"', "credential assignment"),
        ("PASSWORD='" + "s3cr3t" + "!Value'", "credential assignment"),
        ('"client_secret": "' + "Zq9" * 8 + '"', "credential assignment"),
        ('secret="' + "Zq9" * 4 + '"', "credential assignment"),
        ('api_key: "' + "Zq9" * 4 + '"', "credential assignment"),
        ("aws_secret_access_key = '" + "wJalr" * 8 + "'", "credential assignment"),
    ],
)
def test_scanner_catches_a_planted_credential(planted, kind):
    text = f"first line\n{planted}\nlast line\n"
    assert Finding("<text>", 2, kind) in scan_text(text)


def test_scanner_catches_a_service_account_key_file():
    key_file = (
        "{\n"
        '  "type": "service_' + 'account",\n'
        '  "project_id": "p",\n'
        '  "private_' + 'key_id": "0123456789abcdef",\n'
        '  "private_' + 'key": "' + DASHES + "BEGIN " + PRIVATE + DASHES + '\\nMIIE...\\n"\n'
        "}\n"
    )
    kinds = {finding.kind for finding in scan_text(key_file)}
    assert "Google service-account key file" in kinds
    assert Finding("<text>", 2, "Google service-account key file") in scan_text(key_file)


@pytest.mark.parametrize(
    "innocent",
    [
        "password = os.environ['DB_PASSWORD']",
        'password = "<your password>"',
        'secret = "${SECRET}"',
        'api_key = "changeme"',
        'password = ""',
        '"type": "service_' + 'account"',  # the name alone, with no key
        "vehicle_id = '../etc/passwd'",
        "PRIVATE_KEY_PATH = path / 'key.pem'",
        "pass" + 'word = "hunter2-real"  # ' + ALLOW_MARKER + ": emulator default",
    ],
)
def test_scanner_leaves_innocent_lines_alone(innocent):
    assert scan_text(innocent) == []


def test_this_file_does_not_match_itself():
    assert scan_file(Path(__file__)) == []


# --- .gitignore ---------------------------------------------------------------------------

MUST_BE_IGNORED = [
    "demo-output/report/index.html",
    ".venv/bin/python",
    ".venv-bqemulator/bin/python",
    ".venv311/bin/python",
    "my-project-key.json",
    "secrets/sa-key.json",
    "credentials.json",
    "credentials-prod.json",
    "service-account-ci.json",
    "client_secret_1234.apps.googleusercontent.com.json",
    "key.json.key",
    ".env",
]


def test_gitignore_ignores_outputs_virtualenvs_and_key_files():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin", "-z"],
        cwd=ROOT,
        input="\0".join(MUST_BE_IGNORED).encode(),
        capture_output=True,
        check=False,  # exit status 1 when none is ignored
    )
    ignored = set(result.stdout.decode().split("\0")) - {""}
    assert sorted(set(MUST_BE_IGNORED) - ignored) == [], "not ignored by .gitignore"


def test_no_key_file_is_committable():
    key_name = re.compile(
        r"(?i)(^|/)(?:[^/]*-key\.json|credentials[^/]*\.json|service-account[^/]*\.json|"
        r"client_secret[^/]*\.json|[^/]*\.(?:pem|p12|pfx|key))$"
    )
    named_like_keys = [
        str(path.relative_to(ROOT))
        for path in committable_files()
        if key_name.search(str(path.relative_to(ROOT)))
    ]
    assert named_like_keys == []
