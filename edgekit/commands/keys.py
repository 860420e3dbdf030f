"""Key commands, run on the signing host: keygen, certify (a root vouches for a release key), revoke."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from edgekit.commands.keyfiles import PASSPHRASE_HELP, emit, passphrase_for, passphrase_from_env
from edgekit.errors import InputError


@click.command()
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for NAME.key and NAME.pub.",
)
@click.option("--name", default="edgekit", show_default=True, help="Base name of the key files.")
@click.option("--encrypt", is_flag=True, help="Ask for the passphrase at a prompt even when stdin is not a terminal.")
@click.option("--passphrase-env", metavar="VAR", help=PASSPHRASE_HELP)
@click.option("--no-encrypt", is_flag=True,
              help="Write the private key unencrypted (for a key kept in a secret store or CI secret).")
@click.option("--force", is_flag=True, help="Replace existing key files.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def keygen(output: Path, name: str, encrypt: bool, passphrase_env: str | None, no_encrypt: bool, force: bool,
           as_json: bool) -> None:
    """Create an Ed25519 signing key pair: NAME.key (mode 0600) and NAME.pub.

    The private key is encrypted by default: the passphrase comes from
    --passphrase-env, or a prompt in a terminal; --no-encrypt opts out.
    Keep NAME.key on the signing host (edgekit bundle --key); give devices
    NAME.pub (edgekit verify/install --key).
    """
    from edgekit.release.signing import generate_keypair

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name, re.ASCII):
        raise InputError(
            f"--name {name!r} is not a plain file name",
            "Use letters, digits, '.', '_' and '-'; choose the folder with -o",
        )
    if no_encrypt and (encrypt or passphrase_env):
        raise InputError("--no-encrypt contradicts --encrypt / --passphrase-env", "Choose one")
    passphrase = passphrase_from_env(passphrase_env)
    if passphrase is None and not no_encrypt:
        if not (encrypt or sys.stdin.isatty()):
            raise InputError(
                "keygen encrypts the private key by default and needs a passphrase, but there is no terminal to ask",
                "Pass --passphrase-env VAR (a variable holding it), or --no-encrypt for a key kept in a secret store",
            )
        passphrase = click.prompt("Passphrase", hide_input=True, confirmation_prompt=True).encode("utf-8")
    pair = generate_keypair(output, name, passphrase, overwrite=force)
    emit(
        as_json,
        {
            "private_key": str(pair.private),
            "public_key": str(pair.public),
            "key_id": pair.key_id,
            "encrypted": passphrase is not None,
        },
        [
            f"private key: {pair.private} (mode 0600{', encrypted' if passphrase else ''}; keep it secret)",
            f"public key:  {pair.public} (give this to devices)",
            f"key id:      {pair.key_id}",
        ],
    )


@click.command()
@click.argument("release_key", metavar="RELEASE.pub", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--root", "root_key", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The root private key devices trust (kept offline; it signs only certificates).")
@click.option("--expires-in", type=click.IntRange(1, 3650), default=30, show_default=True, metavar="DAYS",
              help="Days until devices stop accepting releases signed by this key.")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Certificate file to write (give it to edgekit bundle --cert).")
@click.option("--passphrase-env", metavar="VAR", help=PASSPHRASE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def certify(release_key: Path, root_key: Path, expires_in: int, output: Path, passphrase_env: str | None,
            as_json: bool) -> None:
    """Certify a release key with the root key, so devices that trust the root accept its releases.

    Rotating the release key is then a new key pair and a new certificate;
    devices keep trusting the same root (edgekit verify/install --key ROOT.pub).
    """
    from edgekit.release.signing import certify as make_certificate
    from edgekit.release.signing import load_private_key, load_public_key, write_certificate
    from edgekit.release.timestamps import release_epoch

    passphrase = passphrase_for(root_key, passphrase_env, "Root key passphrase")
    root = load_private_key(root_key, passphrase)
    issued = release_epoch()
    certificate = make_certificate(root, load_public_key(release_key), issued, issued + expires_in * 86_400)
    write_certificate(output, certificate)
    emit(as_json, {"certificate": str(output), **{k: v for k, v in certificate.items() if k != "sig"}},
          [f"{output}: key {certificate['keyid'][:16]} certified by root {certificate['root_keyid'][:16]} "
           f"until {certificate['expires_at']}"])


@click.command()
@click.argument("key_ids", metavar="KEYID...", nargs=-1, required=True)
@click.option("--root", "root_key", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The root private key devices trust.")
@click.option("--serial", type=click.IntRange(min=1), required=True,
              help="This list's number; devices keep the highest they have seen (list every key still revoked).")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Revocation list to write (give it to edgekit bundle --revocations).")
@click.option("--passphrase-env", metavar="VAR", help=PASSPHRASE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def revoke(key_ids: tuple[str, ...], root_key: Path, serial: int, output: Path, passphrase_env: str | None,
           as_json: bool) -> None:
    """Revoke release keys: a root-signed list that devices remember and enforce from the next bundle on."""
    from edgekit.artifact import atomic_write_bytes
    from edgekit.release import revocation
    from edgekit.release.manifest import canonical_bytes
    from edgekit.release.signing import load_private_key
    from edgekit.release.timestamps import release_epoch

    passphrase = passphrase_for(root_key, passphrase_env, "Root key passphrase")
    document = revocation.make(load_private_key(root_key, passphrase), list(key_ids), serial, release_epoch())
    atomic_write_bytes(output, canonical_bytes(document) + b"\n")
    emit(as_json, {"revocations": str(output), "serial": serial, "revoked": document["revoked"]},
          [f"{output}: list {serial} revokes {len(document['revoked'])} key(s)"])


COMMANDS = [keygen, certify, revoke]
