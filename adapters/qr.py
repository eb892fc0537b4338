"""QR codes (segno): as a PNG to go with an e-mail, and as SVG for a page."""

from __future__ import annotations

import io

import segno


def qr_png(data: str) -> bytes:
    """The QR code of `data` as a PNG (segno writes it without an image library)."""
    out = io.BytesIO()
    segno.make(data, error="m").save(out, kind="png", scale=8, border=4)
    return out.getvalue()


def qr_svg(data: str) -> str:
    """The QR code of `data` as an inline SVG element (no XML declaration)."""
    return str(segno.make(data, error="m").svg_inline(scale=6, border=2))
