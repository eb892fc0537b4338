"""Written statements of erasure: a signed JSON document and its human-readable rendering."""

from __future__ import annotations

import hashlib
import html
from datetime import datetime
from pathlib import Path
from uuid import UUID

import msgspec

from picasse.adapters.signing import PlatformSigner


class KeptRecord(msgspec.Struct, frozen=True):
    kind: str
    reason: str
    until: str | None


class ViewCheck(msgspec.Struct, frozen=True):
    kind: str
    plaintext_values: int


class Statement(msgspec.Struct, frozen=True, kw_only=True):
    """What was erased, when, how; what is kept and why. Holds no personal data."""

    statement: str = "written statement of erasure"
    customer_id: UUID
    terminated_at: datetime
    erased_at: datetime
    method: str = (
        "crypto-shredding: the customer's tenant key and every data subject key under it were"
        " destroyed; personal data sealed under them (AES-256-GCM) can no longer be decrypted"
    )
    destroyed_key_ids: list[UUID]
    unreadable_events: int
    views: list[ViewCheck]
    views_hold_personal_data: bool
    kept_under_legal_obligation: list[KeptRecord]
    export_sha256: str | None
    issued_by: str = "Picasse"
    signing_key: str  # the key id; verification uses the platform's own key


class SignedStatement(msgspec.Struct, frozen=True):
    document: Statement
    signature: str


def canonical(statement: Statement) -> bytes:
    """The exact bytes that are signed: compact JSON with sorted keys."""
    return msgspec.json.encode(msgspec.to_builtins(statement, order="sorted"))


def sign(statement: Statement, signer: PlatformSigner) -> SignedStatement:
    return SignedStatement(statement, signer.sign(canonical(statement)))


def write(signed: SignedStatement, directory: Path) -> tuple[Path, Path]:
    json_path = directory / "statement.json"
    html_path = directory / "statement.html"
    json_path.write_bytes(msgspec.json.format(msgspec.json.encode(signed)) + b"\n")
    html_path.write_text(render_html(signed))
    return json_path, html_path


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
            f"<li>{e(k.kind)}: {e(k.reason)}{f' (until {e(k.until)})' if k.until else ''}</li>"
            for k in d.kept_under_legal_obligation
        )
        or "<li>Nothing: no records are kept under a legal obligation.</li>"
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
<details><summary>Destroyed key ids</summary><ul>{keys}</ul></details>
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
