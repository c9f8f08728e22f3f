"""A real Dovecot (POP3 + IMAP) on loopback, for the tests and the local stack.

POP3 and IMAP are the protocols where an emulator would be the least convincing: UIDL stability,
UIDVALIDITY, dot-stuffing, \\Seen semantics and error texts all come from the server. So the
tests run the Debian Dovecot packages with a self-contained configuration in a work directory:
nothing under /etc is read or written, ports are loopback only, and the process is ours to stop.

Dovecot refuses to store mail as uid 0, so when we run as root mail belongs to nobody (65534)
and every directory on the way to it must be traversable by that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

INSTALL_HINT = (
    "Dovecot is needed for the POP3/IMAP tests and the local stack. Install it with: "
    "apt-get install -y --no-install-recommends dovecot-core dovecot-pop3d dovecot-imapd "
    "(or run `make setup`)."
)
LIBEXEC_DIRS = (Path("/usr/lib/dovecot"), Path("/usr/libexec/dovecot"))
SBIN_DIRS = (Path("/usr/sbin"), Path("/usr/bin"), Path("/usr/local/sbin"))
NOBODY = 65534
INTERNAL_USER = "dovecot"  # Dovecot's default_internal_user, created by the Debian package
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")


class DovecotError(RuntimeError):
    """Dovecot could not be set up, started, or asked something."""


class DovecotNotInstalledError(DovecotError):
    """A Dovecot binary is missing; the message says which package to install."""


@dataclass(frozen=True, slots=True)
class DovecotBinaries:
    """Where the installed Dovecot lives, and which configuration syntax it speaks."""

    dovecot: Path
    doveadm: Path
    lda: Path
    version: tuple[int, int]


def find_dovecot_binaries() -> DovecotBinaries:
    """Locate dovecot, doveadm, dovecot-lda and the pop3/imap protocol binaries.

    Raises DovecotNotInstalledError naming the missing piece and the apt-get line to fix it.
    """
    dovecot = _find_in_path("dovecot", SBIN_DIRS)
    doveadm = _find_in_path("doveadm", SBIN_DIRS)
    if dovecot is None or doveadm is None:
        raise DovecotNotInstalledError(f"dovecot/doveadm not found (package dovecot-core). {INSTALL_HINT}")
    libexec = next((d for d in LIBEXEC_DIRS if (d / "dovecot-lda").exists()), None)
    if libexec is None:
        raise DovecotNotInstalledError(f"dovecot-lda not found (package dovecot-core). {INSTALL_HINT}")
    for binary, package in (("pop3", "dovecot-pop3d"), ("imap", "dovecot-imapd")):
        if not (libexec / binary).exists():
            raise DovecotNotInstalledError(f"{libexec / binary} missing (package {package}). {INSTALL_HINT}")
    return DovecotBinaries(dovecot, doveadm, libexec / "dovecot-lda", _version(dovecot))


def dovecot_available() -> bool:
    """True when every Dovecot binary the tests and the local stack need is installed."""
    try:
        find_dovecot_binaries()
    except DovecotNotInstalledError:
        return False
    return True


class DovecotServer:
    """One Dovecot master process serving POP3 and IMAP on 127.0.0.1 from `workdir`.

    >>> with DovecotServer(Path("/tmp/dc")) as server:  # doctest: +SKIP
    ...     server.add_user("alice", "secret")
    ...     server.deliver("alice", b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
    ...     server.message_count("alice")
    1
    """

    def __init__(self, workdir: Path, pop3_port: int = 0, imap_port: int = 0, extra_config: str = "") -> None:
        """`extra_config`: settings appended to the configuration (e.g. `imap_capability = …` to
        play a server without some extension)."""
        self.workdir = Path(workdir).resolve()
        self.extra_config = extra_config
        self._pop3_port = pop3_port or _free_port()
        self._imap_port = imap_port or _free_port()
        self._users: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._binaries: DovecotBinaries | None = None
        self.mail_uid, self.mail_gid = (NOBODY, NOBODY) if os.geteuid() == 0 else (os.getuid(), os.getgid())

    @property
    def pop3_port(self) -> int:
        return self._pop3_port

    @property
    def imap_port(self) -> int:
        return self._imap_port

    @property
    def config_path(self) -> Path:
        return self.workdir / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "dovecot.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def home(self, username: str) -> Path:
        return self.workdir / "home" / username

    def maildir(self, username: str) -> Path:
        return self.home(username) / "Maildir"

    def add_user(self, username: str, password: str) -> None:
        """Create (or re-password) a mailbox user. Works while running: Dovecot re-reads the file."""
        if not USERNAME_PATTERN.match(username):
            raise ValueError(f"username {username!r} must match {USERNAME_PATTERN.pattern}")
        if any(ch in password for ch in ":\r\n\0"):
            raise ValueError("password may not contain ':', CR, LF or NUL (passwd-file format)")
        self._prepare_dirs()
        home = self.home(username)
        home.mkdir(mode=0o700, exist_ok=True)
        os.chown(home, self.mail_uid, self.mail_gid)
        self._users[username] = password
        self._write_passwd(username)

    def start(self) -> None:
        """Write the configuration, start `dovecot -F` and wait until both ports accept."""
        if self.running:
            return
        self._binaries = find_dovecot_binaries()
        self._prepare_dirs()
        self.config_path.write_text(self._render_config(self._binaries.version))
        output = (self.workdir / "dovecot.out").open("ab")
        try:
            # Own session: a stray Ctrl-C in the test runner reaches us, not Dovecot, and the
            # process group lets stop() reap every child if the master must be killed.
            self._process = subprocess.Popen(  # noqa: S603 - our binary, our arguments
                [str(self._binaries.dovecot), "-c", str(self.config_path), "-F"],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            output.close()
        try:
            self._wait_until_listening()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM the master we started, wait, then SIGKILL its process group if it lingers."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _kill_group(process.pid)
                process.wait(timeout=STOP_TIMEOUT_S)
        # Children normally exit with the master; make sure none outlived it.
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _group_alive(process.pid):
            if time.monotonic() > deadline:
                _kill_group(process.pid)
                break
            time.sleep(0.05)

    def deliver(self, username: str, raw: bytes, folder: str = "INBOX") -> None:
        """Deliver one raw message through dovecot-lda, as an MTA would (creates `folder`)."""
        binaries = self._require_running()
        command = [
            str(binaries.lda),
            "-c",
            str(self.config_path),
            "-d",
            username,
            "-f",
            "sender@test.invalid",
        ]
        if folder != "INBOX":
            command += ["-m", folder]
        result = subprocess.run(  # noqa: S603 - fixed binary, argv list (no shell)
            command, input=raw, capture_output=True, timeout=30, check=False
        )
        if result.returncode != 0:
            raise DovecotError(
                f"dovecot-lda exited {result.returncode}: {result.stderr.decode(errors='replace')}"
            )

    def doveadm(self, *args: str) -> str:
        """Run `doveadm -c CONF ARGS…` (e.g. `mailbox status`, `mailbox update`) and return stdout."""
        binaries = self._require_running()
        command = [str(binaries.doveadm), "-c", str(self.config_path), *args]
        result = subprocess.run(  # noqa: S603 - fixed binary, argv list (no shell)
            command, capture_output=True, timeout=30, check=False
        )
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip()
            raise DovecotError(f"doveadm {' '.join(args)} exited {result.returncode}: {detail}")
        return result.stdout.decode(errors="replace")

    def mailbox_status(self, username: str, folder: str = "INBOX") -> dict[str, int]:
        """messages, unseen, uidnext and uidvalidity of one folder, read by doveadm (not our code)."""
        output = self.doveadm(
            "-f", "flow", "mailbox", "status", "-u", username, "messages unseen uidnext uidvalidity", folder
        )
        return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", output)}

    def message_count(self, username: str, folder: str = "INBOX") -> int:
        return self.mailbox_status(username, folder)["messages"]

    def __enter__(self) -> DovecotServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _require_running(self) -> DovecotBinaries:
        # lda and doveadm look users up through the running auth service's socket.
        if not self.running or self._binaries is None:
            raise DovecotError("Dovecot is not running; call start() first")
        return self._binaries

    def _prepare_dirs(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        if self.mail_uid != os.getuid():
            _require_traversable(self.workdir)
        for name in ("run", "state", "users"):
            (self.workdir / name).mkdir(mode=0o755, exist_ok=True)
        home_root = self.workdir / "home"
        home_root.mkdir(mode=0o755, exist_ok=True)

    def _write_passwd(self, username: str) -> None:
        # One file per user: Dovecot's passwd-file driver checks a file for changes at most once a
        # second, so a user appended to a shared file could stay unknown for up to a second. A new
        # file is read on its first lookup. Atomic replace: never a half-written file.
        users_dir = self.workdir / "users"
        line = f"{username}:{{PLAIN}}{self._users[username]}:{self.mail_uid}:{self.mail_gid}::{self.home(username)}::\n"
        target = users_dir / f"{username}.passwd"
        staging = users_dir / f".{username}.new"
        staging.write_text(line)
        staging.chmod(0o600)
        if os.geteuid() == 0:
            # The auth process reads the file as Dovecot's internal user, not as root.
            staging.chmod(0o640)
            os.chown(staging, 0, _internal_gid())
        staging.replace(target)

    def _render_config(self, version: tuple[int, int]) -> str:
        template = _CONFIG_2_4 if version >= (2, 4) else _CONFIG_2_3
        extra = f"{self.extra_config.rstrip()}\n" if self.extra_config else ""
        return template.format(**self._config_values()) + extra

    def _config_values(self) -> dict[str, object]:
        values: dict[str, object] = {
            "workdir": self.workdir,
            "pop3_port": self._pop3_port,
            "imap_port": self._imap_port,
            "first_valid_uid": min(self.mail_uid, 500),
            "users": "",
        }
        if os.geteuid() != 0:
            # Unprivileged: every Dovecot process runs as us.
            me = pwd.getpwuid(os.getuid()).pw_name
            values["users"] = f"default_internal_user = {me}\ndefault_login_user = {me}\n"
        return values

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = {self._pop3_port, self._imap_port}
        while pending:
            if self._process is None or self._process.poll() is not None:
                raise DovecotError(f"dovecot exited during start-up.\n{self._log_tail()}")
            if time.monotonic() > deadline:
                raise DovecotError(f"dovecot did not open ports {sorted(pending)}.\n{self._log_tail()}")
            pending = {port for port in pending if not _greets(port)}
            if pending:
                time.sleep(0.05)

    def _log_tail(self) -> str:
        parts = []
        for path in (self.workdir / "dovecot.out", self.log_path):
            if path.exists():
                parts.append(
                    f"--- {path} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-20:])
                )
        return "\n".join(parts)


def _find_in_path(name: str, extra_dirs: tuple[Path, ...]) -> Path | None:
    found = shutil.which(name)
    if found:
        return Path(found)
    return next((d / name for d in extra_dirs if (d / name).exists()), None)


def _version(dovecot: Path) -> tuple[int, int]:
    output = subprocess.run(  # noqa: S603 - the located dovecot binary, no shell
        [str(dovecot), "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    match = re.match(r"(\d+)\.(\d+)", output.stdout.strip())
    if match is None:
        raise DovecotError(f"cannot read the Dovecot version from {output.stdout!r} {output.stderr!r}")
    return int(match.group(1)), int(match.group(2))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _greets(port: int) -> bool:
    """True once the port answers with a greeting: login processes greet only when auth is ready,
    so a test that connects right after start() is not met by a half-started server."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
            return conn.recv(64).startswith((b"+OK", b"* OK"))
    except OSError:
        return False


def _require_traversable(path: Path) -> None:
    """Make sure the mail user can walk down to `path`.

    Directories made by tempfile.mkdtemp() and pytest's tmp_path are 0700; inside the system temp
    directory we add o+x (traverse, not list) to those we own. Anywhere else we only report.
    """
    temp_root = Path(tempfile.gettempdir()).resolve()
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if mode & stat.S_IXOTH:
            continue
        owned = directory.stat().st_uid == os.geteuid()
        if owned and directory != temp_root and temp_root in directory.parents:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
            continue
        raise DovecotError(
            f"{directory} is not traversable by other users; Dovecot's mail processes run as "
            f"uid {NOBODY} and must reach {path}. Use a work directory under {temp_root}."
        )


def _internal_gid() -> int:
    try:
        return pwd.getpwnam(INTERNAL_USER).pw_gid
    except KeyError as exc:
        raise DovecotError(
            f"user {INTERNAL_USER!r} is missing; reinstall dovecot-core. {INSTALL_HINT}"
        ) from exc


def _group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in the process group.

    Zombies are ignored: once the master exits, its children are reparented to PID 1, which in a
    container may take seconds to reap them, and a zombie holds no port and no file.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat_file in proc.glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        state, process_group = fields[0], int(fields[2])
        if process_group == pgid and state not in ("Z", "X"):
            return True
    return False


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


_CONFIG_COMMON_SERVICES = """\
service imap-login {{
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""

_CONFIG_2_3 = (
    """\
# Written by emailrouter.local.dovecot (Dovecot 2.3 syntax). Self-contained: no /etc includes.
protocols = imap pop3
listen = 127.0.0.1
base_dir = {workdir}/run
state_dir = {workdir}/state
log_path = {workdir}/dovecot.log
{users}ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
first_valid_uid = {first_valid_uid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {workdir}/users/%u.passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {workdir}/users/%u.passwd
}}
mail_location = maildir:~/Maildir
lda_mailbox_autocreate = yes
pop3_uidl_format = %08Xu%08Xv
# Tests log in with wrong passwords on purpose; the growing per-IP penalty would slow them down.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""
    + _CONFIG_COMMON_SERVICES
)

# Dovecot 2.4 renamed most settings. Written from the 2.4 documentation; Debian 12 ships 2.3.
_CONFIG_2_4 = (
    """\
dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
# Written by emailrouter.local.dovecot (Dovecot 2.4 syntax). Self-contained: no /etc includes.
protocols = imap pop3
listen = 127.0.0.1
base_dir = {workdir}/run
state_dir = {workdir}/state
log_path = {workdir}/dovecot.log
{users}ssl = no
auth_allow_cleartext = yes
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
first_valid_uid = {first_valid_uid}
passdb passwd-file {{
  passwd_file_path = {workdir}/users/%{{user}}.passwd
}}
userdb passwd-file {{
  passwd_file_path = {workdir}/users/%{{user}}.passwd
}}
mail_driver = maildir
mail_path = ~/Maildir
lda_mailbox_autocreate = yes
pop3_uidl_format = %{{uid | hex(8)}}%{{uidvalidity | hex(8)}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""
    + _CONFIG_COMMON_SERVICES
)
