"""Run an edgekit command on a device over SSH, the way Raspberry Pi users work.

``run_on_device(options, upload, args)`` does, with the system ``ssh`` and
``scp`` (no Python SSH library; the user's ``~/.ssh/config``, agent and keys
apply as for any ssh):

1. probe: resolve the device's Python, read its version, whether edgekit is
   installed there, and make a private temporary folder (``mktemp -d``);
2. copy the ``Upload``'s files into that folder (``scp -r``);
3. with ``install``: (re)install edgekit from a wheel built on this machine
   into a venv on the device (``edgekit.remote_install``);
4. run ``python -m edgekit ARGS --json`` inside the folder and read the JSON
   from its stdout; the folder is removed by the same shell when it exits
   (and by a last ssh call if a step before failed), so nothing but the venv
   stays on the device.

Trust: ssh runs with ``StrictHostKeyChecking=yes`` (an unknown or changed
host key is refused, never added) and ``BatchMode=yes`` (no password or
host-key prompts: key login is needed). ``known_hosts`` points ssh at
another known-hosts file. Every failure becomes a ``RemoteError`` subclass
that says what to do (``classify``).

The Python on the device is ``python`` when given, else the venv's
(``DEFAULT_VENV``, made by an earlier ``--install``) when it exists, else
``python3``.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import (
    HostKeyError,
    HostUnreachableError,
    InputError,
    InternalError,
    RemoteError,
    RemoteSetupError,
    SshMissingError,
)
from edgekit.remote_shell import PROBE_CODE, PROBE_MARK, remote_path, tail

DEFAULT_VENV = "~/.cache/edgekit/venv"
MIN_PYTHON = (3, 11)
CONNECT_TIMEOUT_S = 10
SHORT_STEP_TIMEOUT_S = 120  # probe and clean-up; copying and running have no limit (big models, long benches)
SSH_FAILED = 255  # ssh's own exit code; edgekit's are 0-3
_TMP_PATTERN = re.compile(r"^/[A-Za-z0-9._/-]*/edgekit-remote\.[A-Za-z0-9]+$")
_URL = re.compile(r"^(?:ssh://)?(?:(?P<user>[^@/:\s]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^@/:\s\[\]]+)(?::(?P<port>\d+))?/?$")


@dataclass(frozen=True)
class SshTarget:
    """``ssh://[user@]host[:port]`` (the ``ssh://`` may be left out; IPv6 hosts in brackets)."""

    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> SshTarget:
        match = _URL.match(text.strip())
        port = int(match.group("port")) if match and match.group("port") else None
        if not match or (port is not None and not 0 < port < 65536):
            raise InputError(f"'{text}' is not an SSH address",
                             "Give --remote ssh://user@host or ssh://user@host:2222 (a port is optional)")
        return cls(match.group("host").strip("[]"), match.group("user"), port)

    @property
    def destination(self) -> str:
        """``user@host`` as ssh takes it."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user + '@' if self.user else ''}{host}{f':{self.port}' if self.port else ''}"


@dataclass(frozen=True)
class RemoteOptions:
    """Where and how to run: the device, its Python, whether to install edgekit there, and ssh trust settings.

    ``venv`` is a path on the device (``~/`` means the remote home).
    ``known_hosts`` replaces the user's known-hosts file; ``identity`` is a
    private key for ``ssh -i``. ``wheels`` is a local folder of dependency
    wheels for the device (``pip download --platform ...``), for devices that
    cannot reach a package index.
    """

    target: SshTarget
    python: str | None = None
    install: bool = False
    venv: str = DEFAULT_VENV
    known_hosts: Path | None = None
    identity: Path | None = None
    wheels: Path | None = None


@dataclass
class Upload:
    """Local files to copy to the device, each into its own folder (two files may share a name).

    ``add`` returns the path the command on the device uses, relative to the
    remote working folder; ``companions`` go into the same folder (e.g. the
    build's ``<artifact>.report.json``, read from beside the artifact).
    """

    files: list[tuple[Path, str]] = field(default_factory=list)
    _slots: int = 0

    def add(self, path: Path, companions: tuple[Path, ...] = ()) -> str:
        if not path.exists():
            raise InputError(f"{path} does not exist", "Check the path")
        folder = f"in/{self._slots}"
        self._slots += 1
        for item in (path, *(c for c in companions if c.exists())):
            self.files.append((item, f"{folder}/{item.name}"))
        return f"{folder}/{path.name}"

    def stage(self, root: Path) -> Path:
        """Lay the files out under ``root/in`` (hard links where possible) for one ``scp -r``."""
        for source, relative in self.files:
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, symlinks=False)
                continue
            try:
                target.hardlink_to(source.resolve())
            except OSError:  # another filesystem, or links not allowed
                shutil.copy2(source, target)
        (root / "in").mkdir(exist_ok=True)
        return root / "in"


@dataclass(frozen=True)
class RemoteRun:
    """What came back: the command's exit code, its parsed JSON stdout, and the ``remote`` record."""

    exit_code: int
    document: dict[str, Any]
    remote: dict[str, Any]


class Connection:
    """ssh/scp invocations to one device with the options every call shares."""

    def __init__(self, options: RemoteOptions) -> None:
        self.options = options
        self.target = options.target
        ssh, scp = shutil.which("ssh"), shutil.which("scp")
        if ssh is None or scp is None:
            raise SshMissingError(f"no {'ssh' if ssh is None else 'scp'} client on this machine (edgekit --remote uses "
                                  "the system OpenSSH)", "Install it (Debian/Ubuntu: sudo apt install openssh-client)")
        self.ssh, self.scp = ssh, scp

    def _common(self) -> list[str]:
        options = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
                   "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR"]
        if self.options.known_hosts is not None:
            if not self.options.known_hosts.is_file():
                raise InputError(f"known-hosts file not found: {self.options.known_hosts}", "Check the --known-hosts path")
            options += ["-o", f"UserKnownHostsFile={self.options.known_hosts.resolve()}"]
        if self.options.identity is not None:
            if not self.options.identity.is_file():
                raise InputError(f"identity file not found: {self.options.identity}", "Check the --identity path")
            options += ["-i", str(self.options.identity.resolve()), "-o", "IdentitiesOnly=yes"]
        return options

    def run(self, script: str, what: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run a POSIX ``sh`` script on the device; ssh's own failures (exit 255) become RemoteErrors."""
        port = ["-p", str(self.target.port)] if self.target.port else []
        command = [self.ssh, *self._common(), *port, "-T", self.target.destination, "--", f"sh -c {shlex.quote(script)}"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise HostUnreachableError(f"{self.target} did not finish {what} within {timeout:.0f} s",
                                       "Check the device is up and not overloaded, then retry") from None
        if done.returncode == SSH_FAILED:
            raise classify(self.target, done.stderr, what)
        return done

    def copy_up(self, local_dir: Path, remote_dir: str) -> None:
        """``scp -r local_dir HOST:remote_dir/`` (the folder arrives as ``remote_dir/<its name>``)."""
        port = ["-P", str(self.target.port)] if self.target.port else []
        host = f"[{self.target.host}]" if ":" in self.target.host else self.target.host
        where = f"{self.target.user + '@' if self.target.user else ''}{host}:{remote_dir}/"
        done = subprocess.run([self.scp, "-q", "-r", *self._common(), *port, str(local_dir), where],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        if done.returncode == SSH_FAILED or done.returncode != 0 and _ssh_said(done.stderr):
            raise classify(self.target, done.stderr, "copying the files")
        if done.returncode != 0:
            raise RemoteError(f"copying the files to {self.target} failed: {tail(done.stderr)}",
                              "Check there is free space in the device's temporary folder")


def _ssh_said(stderr: str) -> bool:
    return any(marker in stderr for marker in ("Host key verification failed", "Permission denied", "Could not resolve",
                                                "Connection refused", "timed out", "No route to host"))


def classify(target: SshTarget, stderr: str, what: str) -> RemoteError:
    """The error an ssh/scp failure means, from its stderr, with the fix for each case."""
    ssh_command = f"ssh {'-p ' + str(target.port) + ' ' if target.port else ''}{target.destination}"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr or "Host key for" in stderr and "has changed" in stderr:
        return HostKeyError(f"the SSH host key of {target} has CHANGED since it was recorded in known_hosts: the device "
                            "was reinstalled, or someone is intercepting the connection",
                            f"If you reinstalled it, remove the old key with `ssh-keygen -R {target.host}` and run "
                            f"`{ssh_command}` once to check and record the new one")
    if "Host key verification failed" in stderr or "host key is known" in stderr:
        return HostKeyError(f"the SSH host key of {target} is not in known_hosts, and edgekit never trusts an unknown key",
                            f"Run `{ssh_command}` once and compare the fingerprint with the device's, or pass "
                            "--known-hosts FILE holding its key")
    if "Permission denied" in stderr or "Too many authentication failures" in stderr:
        return RemoteError(f"{target} refused the login ({tail(stderr, 1)})",
                           f"edgekit uses key login without prompts: run `ssh-copy-id {target.destination}`, or pass "
                           "--identity KEY")
    unreachable = ("Could not resolve hostname", "Connection refused", "timed out", "No route to host",
                   "Network is unreachable", "Connection closed", "Connection reset", "kex_exchange_identification")
    if any(marker in stderr for marker in unreachable):
        return HostUnreachableError(f"cannot reach {target} ({tail(stderr, 1)})",
                                    "Check the host name and port, that the device is on and its SSH server runs, and "
                                    f"that `{ssh_command}` works from here")
    return RemoteError(f"ssh to {target} failed while {what}: {tail(stderr)}", f"Check that `{ssh_command}` works")


# ------------------------------------------------------------------- the steps


def _probe_script(options: RemoteOptions) -> str:
    """Resolve the Python, describe it, and (when it exists) make the temporary folder."""
    venv = remote_path(options.venv)
    if options.python:
        pick = f"py={remote_path(options.python)}\n"
    elif options.install:  # the Python that creates the venv
        pick = "py=python3\n"
    else:  # a venv an earlier --install made, else the system's
        pick = f"py=python3\nif [ -x {venv}/bin/python ]; then py={venv}/bin/python; fi\n"
    return (pick +
            'if ! command -v "$py" >/dev/null 2>&1; then echo "EDGEKIT-NOPYTHON $py"; exit 0; fi\n'
            f'"$py" -c {shlex.quote(PROBE_CODE)} || exit 0\n'
            'd=$(mktemp -d "${TMPDIR:-/tmp}/edgekit-remote.XXXXXXXX") && echo "EDGEKIT-TMP $d"\n')


def _probe(connection: Connection) -> tuple[dict[str, Any], str]:
    """The device's Python facts and the temporary folder; RemoteSetupError when its Python cannot run edgekit."""
    options, target = connection.options, connection.target
    done = connection.run(_probe_script(options), "looking for Python", SHORT_STEP_TIMEOUT_S)
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in done.stdout.splitlines() if " " in line}
    where = "--python" if options.python else "the default python3"
    if "EDGEKIT-NOPYTHON" in lines:
        raise RemoteSetupError(f"{target} has no Python at '{lines['EDGEKIT-NOPYTHON']}' ({where})",
                               "Install Python 3.11+ there (Raspberry Pi OS bookworm has it), or pass --python PATH")
    if PROBE_MARK not in lines:
        raise RemoteSetupError(f"the Python on {target} did not start: {tail(done.stderr)}", "Pass --python PATH to a working Python 3.11+")
    tmp = lines.get("EDGEKIT-TMP", "")
    try:
        facts = _check_python(json.loads(lines[PROBE_MARK]), options, target)
    except RemoteError:
        if _TMP_PATTERN.match(tmp):
            _cleanup(connection, tmp)
        raise
    if not _TMP_PATTERN.match(tmp):
        raise RemoteError(f"could not make a temporary folder on {target} ({tail(done.stderr) if not tmp else tmp})",
                          "Check that /tmp (or $TMPDIR) on the device exists and is writable")
    return facts, tmp


def _check_python(facts: dict[str, Any], options: RemoteOptions, target: SshTarget) -> dict[str, Any]:
    """``facts`` when that Python can run edgekit (or will, after --install); RemoteSetupError otherwise."""
    version = tuple(int(p) for p in re.findall(r"\d+", facts["python_version"])[:2])
    if version < MIN_PYTHON:
        raise RemoteSetupError(f"{facts['python']} on {target} is Python {facts['python_version']}; edgekit needs "
                               f"{'.'.join(map(str, MIN_PYTHON))}+", "Install a newer Python there and pass --python PATH")
    if not options.install and facts["edgekit"] is None:
        raise RemoteSetupError(f"edgekit is not installed for {facts['python']} on {target}",
                               f"Pass --install to install it from this machine into a venv there ({options.venv}), "
                               "or --python PATH to a Python that has edgekit[runtime]")
    return facts


def _run_script(tmp: str, python: str, args: list[str]) -> str:
    """Run edgekit in ``tmp`` (the uploaded files are under ``in/``) and remove ``tmp`` whatever happens (the shell's EXIT trap)."""
    command = " ".join(shlex.quote(a) for a in ["-m", "edgekit", *args])
    return (f"d={shlex.quote(tmp)}\n"
            "trap 'cd / && rm -rf -- \"$d\"' EXIT\n"
            "trap 'exit 129' HUP INT TERM\n"
            'cd "$d" || exit 3\n'
            f"{python} {command}\n")


def _cleanup(connection: Connection, tmp: str) -> None:
    """Best effort: remove the temporary folder when a step failed before the run (which removes it itself)."""
    try:
        connection.run(f"rm -rf -- {shlex.quote(tmp)}", "removing the temporary folder", SHORT_STEP_TIMEOUT_S)
    except RemoteError:
        pass  # the device went away: its /tmp is cleared at the next boot


def _document(done: subprocess.CompletedProcess[str], target: SshTarget) -> dict[str, Any]:
    """The JSON edgekit printed on the device; a RemoteError with its stderr when there is none."""
    text = done.stdout.strip()
    start = text.find("{")
    try:
        document = json.loads(text[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        raise RemoteError(f"edgekit on {target} exited with code {done.returncode} without a JSON result: "
                          f"{tail(done.stderr)}", "Run the same command on the device with --debug to see why")
    return document


def run_on_device(options: RemoteOptions, upload: Upload, args: list[str], progress: Any = None) -> RemoteRun:
    """Copy ``upload`` to the device, run ``python -m edgekit ARGS`` there (ARGS should include --json), return the JSON.

    ``progress(text)`` is told each step. Errors the command reported on the
    device (``{"ok": false, ...}``) are raised again here with their exit
    code; a budget failure (exit 1 with a report) is returned, not raised.
    """
    say = progress or (lambda text: None)
    started = time.perf_counter()
    connection = Connection(options)
    say(f"connecting to {options.target}")
    facts, tmp = _probe(connection)
    ran = False
    try:
        with tempfile.TemporaryDirectory(prefix="edgekit-upload-") as staging:
            wheel = _wheel_into(upload, Path(staging), options) if options.install else None
            say(f"copying {len(upload.files)} file(s) to {options.target}")
            connection.copy_up(upload.stage(Path(staging)), tmp)
        python = remote_path(facts["python"])
        if wheel is not None:
            from edgekit.remote_install import install

            say(f"installing edgekit in {options.venv} on {options.target}")
            python, facts = install(connection, tmp, wheel, facts)
        say(f"running edgekit {args[0]} on {options.target}")
        ran = True
        done = connection.run(_run_script(tmp, python, args), f"running edgekit {args[0]}")
    finally:
        if not ran:
            _cleanup(connection, tmp)
    document = _document(done, options.target)
    if document.get("ok") is False and done.returncode != 0:
        _reraise(document, done.returncode, options.target)
    return RemoteRun(done.returncode, document, _remote_record(options, facts, time.perf_counter() - started))


def _wheel_into(upload: Upload, staging: Path, options: RemoteOptions) -> tuple[str, str | None]:
    """Build edgekit's wheel into the upload (with the ``wheels`` folder): their paths on the device."""
    from edgekit import remote_install

    return remote_install.add_wheels(upload, staging / "build", options.wheels)


def _reraise(document: dict[str, Any], code: int, target: SshTarget) -> None:
    from edgekit import errors

    cls = {errors.EXIT_BAD_INPUT: InputError, errors.EXIT_INTERNAL: InternalError}.get(code, errors.EdgekitError)
    error = cls(f"on {target}: {document.get('error', 'edgekit failed')}".rstrip("."))
    error.exit_code = code
    raise error


def _remote_record(options: RemoteOptions, facts: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The ``remote`` field of the output: where and with what it ran, and how long the whole trip took."""
    from edgekit import __version__

    warnings = []
    if facts.get("edgekit") and facts["edgekit"] != __version__:
        warnings.append(f"edgekit {facts['edgekit']} on the device, {__version__} here: pass --install to run "
                        "this version there")
    return {"url": str(options.target), "python": facts["python"], "python_version": facts["python_version"],
            "arch": facts["arch"], "edgekit": facts.get("edgekit"), "installed": options.install,
            "venv": options.venv if options.install else None,
            "seconds": round(seconds, 2), "warnings": warnings}
