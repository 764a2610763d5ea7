"""A room's files on its page: the list with download links, and the upload control.

Bytes never pass through the pages: the links point at the file store's own routes
(`GET /api/files/{id}`, `POST /api/rooms/{room}/files`, shards/web/files.py), which
check the room's rules themselves; the page's script sends the session's token with an
upload, as a form's ``csrf`` field would be.
"""

from __future__ import annotations

import time

from core.rooms import rules
from core.store.base import CategoryRecord, ChatStore, RoomRecord
from shards.web.html import Markup, Viewer, join, render
from shards.web.pickers import address

# Rows listed on the page: a room keeps its files for good, and a page of a few hundred
# rows stays quick to draw and read; the newest are shown.
MAX_LISTED_FILES = 200

_SECTION = """<h2 id="files">Files</h2>
<div class="card">
$upload
<table><caption class="hint">$caption</caption>
<thead><tr><th scope="col">Name</th><th scope="col">Size</th><th scope="col">From</th>
<th scope="col">Uploaded (UTC)</th></tr></thead>
<tbody id="file-rows">
$rows
</tbody></table>
</div>"""

_ROW = """<tr><td><a href="/api/files/$id" download="$name">$name</a></td><td>$size</td>
<td>$who</td><td>$when</td></tr>"""

_UPLOAD = """<form id="upload-form" data-room="$room" data-csrf="$csrf">
<p><label for="upload-file">Upload a file</label>
<input id="upload-file" name="file" type="file" required>
<button type="submit" id="upload-button">Upload</button></p>
<p class="hint">At most $max_kb KB. Uploading needs JavaScript.</p>
<p id="upload-status" role="status"></p>
</form>"""


def size_text(size: int) -> str:
    """Bytes as people read them (1000-based, like the KB of the upload limit)."""
    if size < 1000:
        return f"{size} bytes"
    if size < 1_000_000:
        return f"{size / 1000:.1f} KB"
    return f"{size / 1_000_000:.1f} MB"


async def files_section(
    store: ChatStore, room: RoomRecord, category: CategoryRecord, viewer: Viewer, max_upload_kb: int
) -> Markup:
    records = await store.room_files(room.id)
    shown = records[-MAX_LISTED_FILES:][::-1]  # newest first
    rows = join(
        render(
            _ROW,
            id=r.id,
            name=r.name,
            size=size_text(r.size),
            who=address(r.uploader),
            when=time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.ts_ms / 1000)),
        )
        for r in shown
    )
    caption = f"{len(records)} file(s)" + (
        f", the newest {MAX_LISTED_FILES} shown" if len(records) > MAX_LISTED_FILES else ""
    )
    if max_upload_kb > 0 and rules.can_upload(room, category, viewer.uri):
        upload = render(_UPLOAD, room=room.id, csrf=viewer.csrf, max_kb=max_upload_kb)
    else:
        upload = Markup('<p class="hint">You cannot upload files to this room now '
                        "(uploads are off here, or you may not post).</p>")  # fmt: skip
    empty = Markup('<tr><td colspan="4">No files yet.</td></tr>')
    return render(_SECTION, upload=upload, caption=caption, rows=rows or empty)
