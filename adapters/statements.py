"""Written statements of erasure: a signed JSON document and its human-readable rendering."""

from __future__ import annotations

import hashlib
import html
from pathlib import Path

import msgspec

from picasse.adapters.archive import write_atomically
from picasse.adapters.signing import PlatformSigner
from picasse.domain.termination import Statement, canonical


class SignedStatement(msgspec.Struct, frozen=True):
    document: Statement
    signature: str


def sign(statement: Statement, signer: PlatformSigner) -> SignedStatement:
    return SignedStatement(statement, signer.sign(canonical(statement)))


def files(signed: SignedStatement) -> dict[str, bytes]:
    """The statement's files by name, byte for byte the same each time they are made."""
    return {
        "statement.json": msgspec.json.format(msgspec.json.encode(signed)) + b"\n",
        "statement.html": render_html(signed).encode(),
    }


def write(signed: SignedStatement, directory: Path, *, replace: bool = False) -> None:
    """Writes the statement's files into `directory`; a file already there with the same
    bytes is kept, any other needs `replace`."""
    for name, content in files(signed).items():
        path = directory / name
        if not path.is_symlink() and path.is_file() and path.read_bytes() == content:
            continue
        _write_file(path, content, replace=replace)


def _write_file(path: Path, content: bytes, *, replace: bool) -> None:
    write_atomically(path, lambda file: file.write(content), replace=replace)


def read(path: Path) -> SignedStatement:
    return msgspec.json.decode(path.read_bytes(), type=SignedStatement)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def render_html(signed: SignedStatement) -> str:
    d = signed.document
    e = html.escape
    keys = "".join(f"<li><code>{k}</code></li>" for k in d.destroyed_key_ids)
    views = "".join(f"<tr><td>{e(v.kind)}</td><td>{v.plaintext_values}</td></tr>" for v in d.views)
    kept = (
        "".join(
            f"<li>{e(k.kind)}: {f'{len(k.invoices)} invoice(s), ' if k.invoices else ''}"
            f"{e(k.reason)}{f' (until {e(k.until)})' if k.until else ''}</li>"
            for k in d.kept_under_legal_obligation
        )
        or "<li>Nothing: no records are kept under a legal obligation.</li>"
    )
    epoch = (
        f"<p>The key-encryption key (epoch <code>{d.key_epoch.epoch_id}</code>) that wrapped this"
        " customer's keys was destroyed no later than"
        f" {e(d.key_epoch.destroyed_no_later_than.isoformat(timespec='seconds'))}, so no backup"
        " of the database can open them either.</p>"
        if d.key_epoch
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Statement of erasure</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;max-width:46rem;margin:3rem auto;color:#1d2433}}
h1{{font-size:1.6rem}}code{{font-size:.85em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccd;padding:.25rem .6rem;text-align:left}}.sig{{word-break:break-all;color:#556}}</style>
</head><body>
<h1>Written statement of erasure</h1>
<p>Picasse confirms that on <strong>{e(d.erased_at.isoformat(timespec="seconds"))}</strong> it erased the
personal data of customer <code>{d.customer_id}</code>, whose subscription ended on
{e(d.terminated_at.isoformat(timespec="seconds"))}, from all its systems and databases.</p>
<h2>How</h2><p>{e(d.method)}.</p>
<p>{len(d.destroyed_key_ids)} keys were destroyed; {d.unreadable_events} stored events held this
customer's personal data and can no longer be read. The history itself stays intact and verifiable.</p>
<details><summary>Destroyed key ids</summary><ul>{keys}</ul></details>{epoch}
<h2>Views</h2>
<table><tr><th>kind of data</th><th>plaintext values still held</th></tr>{views}</table>
<p>{"Some views still hold personal data." if d.views_hold_personal_data else "No view holds any of this customer's personal data."}</p>
<h2>Kept under a legal obligation</h2><ul>{kept}</ul>
<h2>Signature</h2>
<p>Signed by {e(d.issued_by)} with key <code>{e(d.signing_key)}</code> (Ed25519) over the JSON document
<code>statement.json</code>; check it with <code>picasse gdpr verify-statement statement.json</code>.</p>
<p class="sig"><code>{e(signed.signature)}</code></p>
</body></html>
"""
