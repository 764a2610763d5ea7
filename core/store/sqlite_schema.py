"""The SQLite chat store's schema and its migrations."""

from __future__ import annotations

SCHEMA_VERSION = 2

SCHEMA: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS users (uri TEXT PRIMARY KEY, display_name TEXT NOT NULL,"
    " ha1 TEXT NOT NULL DEFAULT '{}', enabled INTEGER NOT NULL DEFAULT 0,"
    " admin INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS categories (id TEXT PRIMARY KEY, name TEXT NOT NULL,"
    " name_key TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',"
    " invitations INTEGER NOT NULL DEFAULT 1, file_upload INTEGER NOT NULL DEFAULT 1,"
    " history INTEGER NOT NULL DEFAULT 1)",
    "CREATE INDEX IF NOT EXISTS categories_name_key ON categories (name_key)",
    "CREATE TABLE IF NOT EXISTS category_principals ("
    " category_id TEXT NOT NULL REFERENCES categories (id) ON DELETE CASCADE,"
    " principal TEXT NOT NULL,"
    " role TEXT NOT NULL CHECK (role IN ('allowed', 'denied', 'creator')),"
    " PRIMARY KEY (category_id, role, principal))",
    # name_key is str.casefold(name), computed by the store: one Unicode-aware
    # rule on both backends, where lower()/NOCASE would fold only ASCII here.
    "CREATE TABLE IF NOT EXISTS rooms (id TEXT PRIMARY KEY, name TEXT NOT NULL,"
    " name_key TEXT NOT NULL UNIQUE, category_id TEXT NOT NULL REFERENCES categories (id),"
    " description TEXT NOT NULL DEFAULT '', topic TEXT NOT NULL DEFAULT '',"
    " privacy TEXT NOT NULL CHECK (privacy IN ('open', 'closed', 'secret')),"
    " type TEXT NOT NULL CHECK (type IN ('normal', 'auditorium')),"
    " invitations TEXT NOT NULL CHECK (invitations IN ('inherit', 'off')),"
    " disabled INTEGER NOT NULL DEFAULT 0, created_by TEXT NOT NULL DEFAULT '',"
    " created_ms INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS rooms_category ON rooms (category_id)",
    "CREATE TABLE IF NOT EXISTS room_principals ("
    " room_id TEXT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,"
    " principal TEXT NOT NULL,"
    " role TEXT NOT NULL CHECK (role IN ('member', 'manager', 'presenter')),"
    " PRIMARY KEY (room_id, role, principal))",
    "CREATE INDEX IF NOT EXISTS room_principals_principal ON room_principals (principal, role)",
    # (room_id, seq) is the key; the explicit INTEGER PRIMARY KEY is there because
    # the FTS5 external content table needs a rowid that VACUUM never renumbers.
    # No FK to rooms: one group commit carries many rooms, and a room deleted by
    # an admin meanwhile must not fail the other rooms' posts.
    "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, room_id TEXT NOT NULL,"
    " seq INTEGER NOT NULL, author TEXT NOT NULL, ts_ms INTEGER NOT NULL, text TEXT NOT NULL,"
    " client_key TEXT NOT NULL DEFAULT '', UNIQUE (room_id, seq))",
    "CREATE INDEX IF NOT EXISTS messages_client_key ON messages (room_id, author, client_key)",
    # remove_diacritics 0 matches PostgreSQL's 'simple' configuration.
    "CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(text, content='messages',"
    " content_rowid='id', tokenize='unicode61 remove_diacritics 0')",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_insert AFTER INSERT ON messages BEGIN"
    " INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages BEGIN"
    " INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);"
    " END",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_update AFTER UPDATE OF text ON messages BEGIN"
    " INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);"
    " INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text); END",
    "CREATE TABLE IF NOT EXISTS invitations (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " room_id TEXT NOT NULL, invitee TEXT NOT NULL, inviter TEXT NOT NULL,"
    " ts_ms INTEGER NOT NULL, delivered INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS invitations_pending ON invitations (invitee) WHERE NOT delivered",
    "CREATE INDEX IF NOT EXISTS invitations_room ON invitations (room_id)",
    "CREATE TABLE IF NOT EXISTS follows (user_uri TEXT NOT NULL, room_id TEXT NOT NULL,"
    " PRIMARY KEY (user_uri, room_id))",
    "CREATE INDEX IF NOT EXISTS follows_room ON follows (room_id)",
    "CREATE TABLE IF NOT EXISTS prefs (user_uri TEXT NOT NULL, label TEXT NOT NULL,"
    " seqid INTEGER NOT NULL, content BLOB NOT NULL, PRIMARY KEY (user_uri, label))",
    "CREATE TABLE IF NOT EXISTS files (id TEXT PRIMARY KEY, room_id TEXT NOT NULL,"
    " name TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,"
    " uploader TEXT NOT NULL, ts_ms INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS files_room ON files (room_id)",
    "CREATE TABLE IF NOT EXISTS compliance_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " kind TEXT NOT NULL, payload TEXT NOT NULL, ts_ms INTEGER NOT NULL)",
)
# Version 2: the room's own upload switch (filepost), and the post that announced a file
# (0: not posted yet), so removing the post removes its file.
FILES_V2: tuple[str, ...] = (
    "ALTER TABLE rooms ADD COLUMN file_upload TEXT NOT NULL DEFAULT 'inherit'"
    " CHECK (file_upload IN ('inherit', 'off'))",
    "ALTER TABLE files ADD COLUMN post_seq INTEGER NOT NULL DEFAULT 0",
)
# MIGRATIONS[v] takes schema version v to v + 1; version 0 is an empty file.
MIGRATIONS: tuple[tuple[str, ...], ...] = (SCHEMA, FILES_V2)
