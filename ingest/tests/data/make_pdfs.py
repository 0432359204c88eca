#!/usr/bin/env python3
"""Makes the small PDFs in this folder (run from here: python3 make_pdfs.py; needs qpdf).

- three_pages.pdf: Info /Title "Ingest Test", page 1 and 3 with text, page 2 blank (no text).
- no_text.pdf: one page that only draws a rectangle (stands in for a scanned PDF).
- encrypted_empty_password.pdf: three_pages.pdf encrypted with AES-256, EMPTY user password,
  owner password "owner" (qpdf --encrypt "" owner 256): must open without a password.
- encrypted_password.pdf: the same with user password "secret": needs a password.
"""
import subprocess


def pdf(pages, title=None):
    """A minimal PDF: `pages` is a list of content-stream byte strings (Helvetica is /F1)."""
    objs = []  # object bodies, object i+1 at objs[i]
    n_pages = len(pages)
    # 1 catalog, 2 pages, 3 font, then per page: page object, content stream; then info
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n_pages))
    objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for i, content in enumerate(pages):
        objs.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objs.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    info = None
    if title:
        objs.append(b"<< /Title (" + title.encode() + b") /Producer (make_pdfs.py) >>")
        info = len(objs)
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objs):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % (i + 1) + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    trailer = b"<< /Size %d /Root 1 0 R" % (len(objs) + 1)
    if info:
        trailer += b" /Info %d 0 R" % info
    out += b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def text(lines):
    ops = [b"BT /F1 12 Tf 72 720 Td 14 TL"]
    for line in lines:
        ops.append(b"(" + line.encode("latin-1") + b") Tj T*")
    ops.append(b"ET")
    return b"\n".join(ops)


page1 = text([
    "Retrieval needs text. This first page talks about infor-",
    "mation retrieval and the ingest pipeline.",
])
page3 = text(["The third page closes the document with a final sentence."])
with open("three_pages.pdf", "wb") as f:
    f.write(pdf([page1, b"", page3], title="Ingest Test"))
with open("no_text.pdf", "wb") as f:
    f.write(pdf([b"0 0 1 rg 100 100 200 200 re f"]))
subprocess.run(["qpdf", "--encrypt", "", "owner", "256", "--", "three_pages.pdf",
                "encrypted_empty_password.pdf"], check=True)
subprocess.run(["qpdf", "--encrypt", "secret", "owner", "256", "--", "three_pages.pdf",
                "encrypted_password.pdf"], check=True)
