"""File transfers of the client: upload to a room and download by id over HTTP, signed in
with the file token the server hands out in rpl:getservinfo (docs/web.md "Files").

Files stream from and to disk in chunks (disk calls in a thread); a download is written
to a temporary name beside its target and renamed when complete, so a cut-off transfer
never leaves a file that looks whole.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote

import aiohttp

from client.session import PchatClient
from core.errors import BadRequest
from core.files.names import check_name

CHUNK_BYTES = 64 * 1024  # bytes read or written at once: bounds a transfer's memory
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)


class TransferError(ValueError):
    """A transfer the server refused or that failed; the message says why, on one line."""


async def _file_service(client: PchatClient, *, fresh: bool) -> tuple[str, str]:
    """(fileServiceUrl, fileToken); ``fresh`` asks the server again (a token expires)."""
    if fresh or not client.server_info.get("fileToken"):
        reply = await client.command(
            "cmd:getserverinfo", f'<sib domain="{client.domain}" infoType="123"/>'
        )
        sib = reply.data.find("sib") if reply.data is not None else None
        if sib is not None:
            client.server_info = dict(sib.attrs)
    base = client.server_info.get("fileServiceUrl", "")
    token = client.server_info.get("fileToken", "")
    if not base or not token:
        raise TransferError("this server offers no file service")
    return base.rstrip("/"), token


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    f: BinaryIO = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(f.read, CHUNK_BYTES):
            yield chunk
    finally:
        await asyncio.to_thread(f.close)


async def _error(resp: aiohttp.ClientResponse) -> TransferError:
    try:
        why = str((await resp.json(content_type=None))["error"])
    except (ValueError, KeyError, TypeError, aiohttp.ClientError):
        why = resp.reason or "failed"
    return TransferError(f"{resp.status}: {why}")


async def upload(client: PchatClient, room_uri: str, path: Path) -> dict[str, object]:
    """Uploads ``path`` into the room; the server's record (id, msgid of the file post…)."""
    try:
        name = check_name(path.name)
    except BadRequest as exc:
        raise TransferError(str(exc)) from exc
    if not await asyncio.to_thread(path.is_file):
        raise TransferError(f"{path}: no such file")
    room_id = room_uri.rpartition("/")[2]
    for fresh in (False, True):  # an expired token: ask for a new one, once
        base, token = await _file_service(client, fresh=fresh)
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as http,
            http.post(
                f"{base}/rooms/{room_id}/files",
                params={"name": name},
                data=_chunks(path),
                headers={"Authorization": f"Bearer {token}"},
            ) as resp,
        ):
            if resp.status == 201:
                body: dict[str, object] = await resp.json()
                return body
            if resp.status != 401:
                raise await _error(resp)
    raise TransferError("401: the server refused the file token")


def _name_of(resp: aiohttp.ClientResponse, file_id: str) -> str:
    """The file's name from Content-Disposition (filename*=UTF-8''…), checked as on upload."""
    disposition = resp.headers.get("Content-Disposition", "")
    _, _, encoded = disposition.partition("filename*=UTF-8''")
    try:
        return check_name(unquote(encoded))
    except BadRequest:
        return file_id


async def download(client: PchatClient, file_id: str, target: Path | None) -> Path:
    """Saves the file to ``target`` (or its own name in the current directory); never
    overwrites an existing file."""
    for fresh in (False, True):
        base, token = await _file_service(client, fresh=fresh)
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as http,
            http.get(
                f"{base}/files/{file_id}", headers={"Authorization": f"Bearer {token}"}
            ) as resp,
        ):
            if resp.status == 200:
                path = target or Path(_name_of(resp, file_id))
                await _save(resp, path)
                return path
            if resp.status != 401:
                raise await _error(resp)
    raise TransferError("401: the server refused the file token")


async def _save(resp: aiohttp.ClientResponse, path: Path) -> None:
    if await asyncio.to_thread(path.exists):
        raise TransferError(f"{path} exists; give another PATH")
    part = path.with_name(f".{path.name}.part")
    out: BinaryIO = await asyncio.to_thread(part.open, "xb")
    try:
        async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
            await asyncio.to_thread(out.write, chunk)
        await asyncio.to_thread(out.close)
        await asyncio.to_thread(os.replace, part, path)
    except BaseException:
        await asyncio.to_thread(out.close)
        await asyncio.to_thread(part.unlink, missing_ok=True)
        raise
