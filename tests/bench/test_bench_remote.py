"""``bench --remote`` and ``validate --remote`` against a real OpenSSH server started on 127.0.0.1.

The server (Debian's openssh-server) runs as the current user on a free
port, with a host key and an authorized client key generated into a
temporary folder; the "device" is this machine, its Python this venv's, so
no install is needed. Skipped, saying so, where sshd is not installed.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SSHD = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if Path(p).is_file()), None)
SFTP_SERVER = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                                "/usr/libexec/sftp-server") if Path(p).is_file()), None)
needs_sshd = pytest.mark.skipif(SSHD is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
                                reason="needs OpenSSH's sshd, ssh and ssh-keygen (Debian: apt-get install openssh-server)")


@dataclass(frozen=True)
class Server:
    url: str
    port: int
    identity: Path
    known_hosts: Path
    folder: Path

    def args(self, known_hosts: Path | None = None) -> list[str]:
        return ["--remote", self.url, "--identity", str(self.identity),
                "--known-hosts", str(known_hosts or self.known_hosts), "--python", sys.executable]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, capture_output=True)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if SSHD is None:
        pytest.skip("sshd is not installed (Debian: apt-get install openssh-server)")
    folder = tmp_path_factory.mktemp("sshd")
    host_key = _keygen(folder / "host_key")
    (folder / "authorized_keys").write_text(_keygen(folder / "client_key") + "\n")
    port = _free_port()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    config = [f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}",
              f"AuthorizedKeysFile {folder / 'authorized_keys'}", "PidFile none", "StrictModes no", "UsePAM no",
              "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
              "PermitRootLogin prohibit-password", *([f"Subsystem sftp {SFTP_SERVER}"] if SFTP_SERVER else [])]
    (folder / "sshd_config").write_text("\n".join(config) + "\n")
    if os.geteuid() == 0 and not Path("/run/sshd").is_dir():
        Path("/run/sshd").mkdir(mode=0o755)  # sshd's privilege-separation folder; systemd makes it on a normal boot
    log = (folder / "sshd.log").open("w")
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while "Server listening" not in (folder / "sshd.log").read_text() and time.monotonic() < deadline:
            if server.poll() is not None:
                pytest.skip(f"sshd did not start: {(folder / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.05)
        yield Server(f"ssh://{getpass.getuser()}@127.0.0.1:{port}", port, folder / "client_key",
                     folder / "known_hosts", folder)
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def _leftovers() -> set[str]:
    return {p.name for p in Path("/tmp").glob("edgekit-remote.*")}


@needs_sshd
@pytest.mark.slow
def test_remote_bench_returns_the_local_json_shape_and_leaves_nothing(sshd: Server, mlp_onnx: Path, cli) -> None:
    before = _leftovers()
    local = cli("bench", mlp_onnx, "--runs", "20", "--warmup", "2", "--json")
    remote = cli("bench", mlp_onnx, "--runs", "20", "--warmup", "2", "--label", "loopback-pi", *sshd.args(), "--json")
    assert local.code == 0 and remote.code == 0, remote.err
    here, there = json.loads(local.out), json.loads(remote.out)
    assert set(there) == set(here) | {"remote"}
    assert set(there["results"][0]) == set(here["results"][0])
    assert set(there["results"][0]["device_state"]) == {"before", "after", "warnings"}
    assert there["machine"]["label"] == "loopback-pi" and there["results"][0]["artifact"] == "mlp.onnx"
    assert there["remote"]["url"] == sshd.url and there["remote"]["python"] == sys.executable
    assert there["results"][0]["sha256"] == here["results"][0]["sha256"]  # the same bytes ran there
    assert _leftovers() == before  # the temporary folder on the device is gone


@needs_sshd
def test_an_unknown_or_changed_host_key_is_refused(sshd: Server, mlp_onnx: Path, cli, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    unknown = cli("bench", mlp_onnx, *sshd.args(empty))
    assert unknown.code == 2 and "not in known_hosts" in unknown.err and "--known-hosts" in unknown.err
    other = tmp_path / "other_key"
    (tmp_path / "changed").write_text(f"[127.0.0.1]:{sshd.port} {_keygen(other)}\n")
    changed = cli("bench", mlp_onnx, *sshd.args(tmp_path / "changed"))
    assert changed.code == 2 and "CHANGED" in changed.err and "ssh-keygen -R" in changed.err


@needs_sshd
def test_remote_setup_errors_say_what_to_do(sshd: Server, mlp_onnx: Path, cli) -> None:
    closed = cli("bench", mlp_onnx, "--remote", f"ssh://127.0.0.1:{_free_port()}", "--known-hosts", str(sshd.known_hosts))
    assert closed.code == 2 and "cannot reach" in closed.err
    args = sshd.args()
    missing = cli("bench", mlp_onnx, *args[:-1], "/nonexistent/python3")
    assert missing.code == 2 and "no Python at '/nonexistent/python3'" in missing.err
    bare = cli("bench", mlp_onnx, *args[:-1], sys._base_executable)  # this interpreter without the venv: no edgekit
    assert bare.code == 2 and "edgekit is not installed" in bare.err and "--install" in bare.err


def test_no_ssh_client_is_a_clear_error(mlp_onnx: Path, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no ssh on it
    result = cli("bench", mlp_onnx, "--remote", "ssh://pi@raspberrypi.local")
    assert result.code == 2 and "no ssh client" in result.err and "openssh-client" in result.err


def test_ssh_addresses_parse_and_bad_ones_are_refused() -> None:
    from edgekit.errors import InputError
    from edgekit.remote import SshTarget

    assert SshTarget.parse("ssh://pi@raspberrypi.local:2222") == SshTarget("raspberrypi.local", "pi", 2222)
    assert SshTarget.parse("pi@10.0.0.7") == SshTarget("10.0.0.7", "pi", None)
    assert SshTarget.parse("ssh://[fe80::1]:22").host == "fe80::1"
    assert str(SshTarget("fe80::1", "pi", 22)) == "ssh://pi@[fe80::1]:22"
    for bad in ("ssh://pi@host:99999", "http://host", "ssh://a b", ""):
        with pytest.raises(InputError):
            SshTarget.parse(bad)


@needs_sshd
def test_remote_validate_with_the_manifest_copied_along(sshd: Server, mlp_onnx: Path, cli, tmp_path: Path,
                                                        manifest_for) -> None:
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32)
    y = ort.InferenceSession(str(mlp_onnx)).run(None, {"x": x})[0].argmax(1)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    manifest = manifest_for(mlp_onnx, {"pi-lab": {"max_size_mb": 1.0, "max_accuracy_drop": 0.01}})
    result = cli("validate", mlp_onnx, "--data", tmp_path / "data.npz", "--manifest", manifest, "--runs", "5",
                 *sshd.args(), "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["target"] == "pi-lab" and report["passed"] and report["remote"]["url"] == sshd.url
    assert report["manifest"]["file"] == str(manifest) and report["artifact"] == str(mlp_onnx)
    assert {c["budget"]: c["status"] for c in report["checks"]}["max_accuracy_drop"] == "pass"
