// The pchat browser client: one WebSocket (docs/websocket.md), no external assets.
"use strict";

const PAGE = 50;              // posts per history page
const BACKOFF_MIN_MS = 500;   // first reconnect delay; doubled per failure
const BACKOFF_MAX_MS = 10000; // a restarted worker is back within seconds
const PING_MS = 25000;        // below the server's idle timeout (90 s by default)
const FILE_LINK = /\/api\/files\/[A-Za-z0-9_-]{24}/;
// The server's announcement of an upload (docs/protocol.md "File posts").
const FILE_POST = /^\[file\] ([^\r\n]+) \((\d+) bytes\) \S*(\/api\/files\/[A-Za-z0-9_-]{24})$/;

const $ = (id) => document.getElementById(id);
const state = {
  ws: null, ids: 0, waiting: new Map(), me: "", limits: {}, backoff: BACKOFF_MIN_MS,
  rooms: new Map(),       // uri -> Room as the server last described it
  open: new Map(),        // uri -> {msgs: Map msgid->Message, oldest, newest, more, pending}
  followed: new Map(),    // uri -> unread count
  members: [], current: "", csrf: "", pingTimer: null, loading: false,
  stick: true,            // the log follows new posts (the reader is at its bottom)
  pendingPosts: new Map(), // key -> {room, text}: sent, not yet acknowledged
};

// ---- the socket -------------------------------------------------------------------------

function setConn(what) {
  const el = $("conn-state");
  el.textContent = what;
  el.className = "conn conn-" + what;
  document.body.dataset.conn = what;
}

function connect() {
  setConn(state.ws === null && state.ids === 0 ? "connecting" : "reconnecting");
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws" +
    (state.csrf ? "?csrf=" + encodeURIComponent(state.csrf) : "");
  const ws = new WebSocket(url);
  state.ws = ws;
  ws.onmessage = (ev) => { for (const msg of JSON.parse(ev.data)) onMessage(msg); };
  ws.onclose = (ev) => {
    if (state.ws !== ws) return;
    clearInterval(state.pingTimer);
    for (const [, w] of state.waiting) w.reject(new Error("connection lost"));
    state.waiting.clear();
    if (ev.code === 4001) { setConn("offline"); $("composer-status").textContent = "Signed out: " + ev.reason; return; }
    setConn("reconnecting");
    const delay = state.backoff * (0.75 + Math.random() / 2);
    state.backoff = Math.min(state.backoff * 2, BACKOFF_MAX_MS);
    setTimeout(connect, delay);
  };
}

function request(type, fields) {
  const id = ++state.ids;
  return new Promise((resolve, reject) => {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) { reject(new Error("not connected")); return; }
    state.waiting.set(id, { resolve, reject });
    state.ws.send(JSON.stringify(Object.assign({ type, id }, fields || {})));
  });
}

function onMessage(msg) {
  if (msg.id && state.waiting.has(msg.id)) {
    const w = state.waiting.get(msg.id);
    state.waiting.delete(msg.id);
    if (msg.type === "error") { const e = new Error(msg.reason); e.code = msg.code; w.reject(e); } else w.resolve(msg);
    return;
  }
  switch (msg.type) {
    case "hello": onHello(msg); break;
    case "message": addMessages(msg.message.room, [msg.message]); break;
    case "presence": onPresence(msg); break;
    case "new_content": state.followed.set(msg.room, msg.unread); renderLists(); break;
    case "invitation": addInvitation(msg.invitation); break;
    case "error": $("composer-status").textContent = msg.reason; break;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function onHello(msg) {
  const ws = state.ws;
  state.me = msg.user;
  state.limits = msg;
  document.body.dataset.session = msg.session;  // "<worker>.<n>": which worker holds it
  state.backoff = BACKOFF_MIN_MS;
  $("me").textContent = msg.user.replace(/^sip:/, "");
  clearInterval(state.pingTimer);
  state.pingTimer = setInterval(() => request("ping").catch(() => {}), PING_MS);
  // A room's owner may be the worker that just restarted: 503 until it is back, so the
  // restore is retried with backoff on this socket (a drop reconnects instead).
  for (let delay = BACKOFF_MIN_MS; state.ws === ws; delay = Math.min(delay * 2, BACKOFF_MAX_MS)) {
    try {
      await resume();
      setConn("connected");
      $("composer-status").textContent = "";
      return;
    } catch (e) {
      if (!e.code) return;  // the socket dropped: onclose reconnects
      $("composer-status").textContent = "Restoring the rooms: " + e.message;
      await sleep(delay);
    }
  }
}

// After (re)connecting: lists, then every open room joined again and caught up by msgid,
// then the posts that were never acknowledged sent again with their keys (stored once).
async function resume() {
  await refreshLists();
  for (const uri of [...state.open.keys()]) {
    let joined;
    try {
      joined = await request("join", { room: uri });
    } catch (e) {
      if (e.code !== 403 && e.code !== 404) throw e;
      state.open.delete(uri);  // no longer readable: the room is closed here
      if (state.current === uri) { state.current = ""; renderRoom(); }
      continue;
    }
    state.rooms.set(uri, joined.room);
    state.open.get(uri).joined = joined;
    if (uri === state.current) showPeople(joined);
    await catchUp(uri);
  }
  for (const [key, p] of state.pendingPosts) sendPost(p.room, p.text, key);
  renderLists();
}

async function catchUp(uri) {
  const room = state.open.get(uri);
  if (room.newest === null) { await loadOlder(uri); return; }
  for (;;) {
    const page = await request("history", { room: uri, after: room.newest, count: PAGE });
    addMessages(uri, page.messages);
    if (page.messages.length < PAGE && !page.more) return;
  }
}

async function refreshLists() {
  const [member, followed, inv] = await Promise.all([
    request("rooms", { kind: "member" }), request("rooms", { kind: "follower" }), request("invitations"),
  ]);
  state.members = member.rooms.map((r) => r.uri);
  for (const r of member.rooms.concat(followed.rooms)) state.rooms.set(r.uri, r);
  const keep = new Map();
  for (const r of followed.rooms) keep.set(r.uri, state.followed.get(r.uri) || 0);
  state.followed = keep;
  for (const i of inv.invitations) addInvitation(i);
}

// ---- rooms --------------------------------------------------------------------------------

function roomItem(uri, extra) {
  const r = state.rooms.get(uri) || { uri, name: uri };
  const li = document.createElement("li");
  const b = document.createElement("button");
  b.type = "button";
  b.className = "room";
  b.dataset.uri = uri;
  b.textContent = r.name || uri;
  if (r.visibility) b.title = r.visibility + (r.online !== undefined ? ", " + r.online + " online" : "");
  if (uri === state.current) b.setAttribute("aria-current", "true");
  b.addEventListener("click", () => openRoom(uri));
  li.appendChild(b);
  if (extra !== undefined) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = extra ? String(extra) : "";
    badge.setAttribute("aria-label", extra + " unread");
    li.appendChild(badge);
  }
  return li;
}

function fill(id, items) {
  const ul = $(id);
  ul.replaceChildren(...items);
}

function renderLists() {
  fill("joined", [...state.open.keys()].map((u) => roomItem(u)));
  fill("followed", [...state.followed].map(([u, n]) => roomItem(u, state.open.has(u) ? 0 : n)));
  fill("member", state.members.map((u) => roomItem(u)));
  const cur = state.rooms.get(state.current);
  $("room-name").textContent = cur ? cur.name : "No room open";
  $("room-topic").textContent = cur ? cur.topic || cur.description || "" : "";
  $("follow").textContent = state.followed.has(state.current) ? "Unfollow" : "Follow";
  for (const id of ["follow", "leave", "show-people", "text", "send", "file"]) $(id).disabled = !cur;
  $("history-search").hidden = !cur;
}

async function openRoom(uri) {
  if (!state.open.has(uri)) {
    let joined;
    try { joined = await request("join", { room: uri }); } catch (e) { $("composer-status").textContent = e.message; return; }
    state.rooms.set(uri, joined.room);
    state.open.set(uri, { msgs: new Map(), oldest: null, newest: null, more: true, joined });
    state.current = uri;
    renderLists();
    renderRoom();
    await loadOlder(uri);
  } else {
    state.current = uri;
    renderRoom();
  }
  if (state.followed.has(uri)) state.followed.set(uri, 0);
  renderLists();
  $("text").focus();
}

async function leaveRoom() {
  const uri = state.current;
  await request("part", { room: uri }).catch(() => {});
  state.open.delete(uri);
  state.current = state.open.keys().next().value || "";
  renderRoom();
  renderLists();
}

async function toggleFollow() {
  const uri = state.current;
  const on = !state.followed.has(uri);
  try { await request(on ? "follow" : "unfollow", { room: uri }); } catch (e) { $("composer-status").textContent = e.message; return; }
  if (on) state.followed.set(uri, 0); else state.followed.delete(uri);
  renderLists();
}

async function searchRooms(ev) {
  ev.preventDefault();
  const text = $("room-search-text").value.trim();
  const found = await request("search_rooms", { text });
  for (const r of found.rooms) state.rooms.set(r.uri, r);
  $("results-section").hidden = false;
  fill("results", found.rooms.length ? found.rooms.map((r) => roomItem(r.uri)) : [note("No rooms found")]);
}

function note(text) {
  const li = document.createElement("li");
  li.className = "note";
  li.textContent = text;
  return li;
}

function addInvitation(inv) {
  const ul = $("invitations");
  if (ul.querySelector(`[data-invite="${CSS.escape(inv.id)}"]`)) return;
  state.rooms.set(inv.room, state.rooms.get(inv.room) || { uri: inv.room, name: inv.name });
  const li = roomItem(inv.room);
  li.dataset.invite = inv.id;
  li.querySelector("button").textContent = inv.name + " (from " + inv.inviter.replace(/^sip:/, "") + ")";
  ul.appendChild(li);
}

// ---- people -------------------------------------------------------------------------------

function showPeople(joined) {
  const room = state.open.get(joined.room.uri);
  if (room) room.joined = joined;
  if (joined.room.uri !== state.current) return;
  const list = joined.participants;
  $("people-count").textContent = "(" + (joined.room.online ?? list.length) + ")";
  fill("people-list", list.map((u) => { const li = document.createElement("li"); li.textContent = u.replace(/^sip:/, ""); return li; }));
  $("people-note").textContent = list.length === 0 && joined.room.online > 0 ? "A large room: only the count is shown." : "";
}

function onPresence(msg) {
  const room = state.open.get(msg.room);
  if (!room) return;
  if (msg.user === state.me && !msg.online) {  // removed from the room
    state.open.delete(msg.room);
    if (state.current === msg.room) state.current = "";
    renderRoom(); renderLists(); return;
  }
  const j = room.joined;
  const set = new Set(j.participants);
  if (msg.online) set.add(msg.user); else set.delete(msg.user);
  j.participants = [...set];
  j.room.online = set.size;
  showPeople(j);
}

// ---- messages -----------------------------------------------------------------------------

function downloadLink(path, label) {
  const a = document.createElement("a");
  a.href = path;  // this server's own route, whatever host the announcement names
  a.textContent = label;
  a.setAttribute("download", "");
  return a;
}

function renderText(parent, text) {
  const file = FILE_POST.exec(text);
  if (file) {
    parent.append("File: ", downloadLink(file[3], file[1]), ` (${Number(file[2]).toLocaleString()} bytes)`);
    return;
  }
  // Plain text; a link to this server's file routes becomes a download link.
  let rest = text;
  for (;;) {
    const m = FILE_LINK.exec(rest);
    if (!m) break;
    parent.append(rest.slice(0, m.index), downloadLink(m[0], "download"));
    rest = rest.slice(m.index + m[0].length);
  }
  parent.append(rest);
}

function messageEl(m) {
  const li = document.createElement("li");
  li.className = "msg";
  li.dataset.msgid = String(m.msgid);
  const meta = document.createElement("div");
  meta.className = "meta";
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = m.author.replace(/^sip:/, "");
  const time = document.createElement("time");
  time.dateTime = m.ts;
  const d = new Date(m.ts);  // shown in the browser's time zone
  time.textContent = d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  time.title = d.toString();
  meta.append(author, time);
  const p = document.createElement("p");
  p.className = "text";
  renderText(p, m.text);
  li.append(meta, p);
  return li;
}

// Merges posts into a room by msgid: a msgid already held is skipped, so a catch-up that
// overlaps live posts adds no duplicate, and the list stays in msgid order.
function addMessages(uri, list) {
  const room = state.open.get(uri);
  if (!room) return;
  const fresh = list.filter((m) => !room.msgs.has(m.msgid));
  if (!fresh.length) return;
  for (const m of fresh) {
    room.msgs.set(m.msgid, m);
    if (room.oldest === null || m.msgid < room.oldest) room.oldest = m.msgid;
    if (room.newest === null || m.msgid > room.newest) room.newest = m.msgid;
  }
  if (uri !== state.current) return;
  const log = $("log"), ol = $("messages");
  const oldHeight = log.scrollHeight, oldTop = log.scrollTop;
  fresh.sort((a, b) => a.msgid - b.msgid);
  for (const m of fresh) {
    const el = messageEl(m);
    let after = null;
    for (const child of ol.children) { if (Number(child.dataset.msgid) > m.msgid) { after = child; break; } }
    ol.insertBefore(el, after);
  }
  if (fresh[fresh.length - 1].msgid < room.newest) log.scrollTop = oldTop + (log.scrollHeight - oldHeight);
  else if (state.stick) log.scrollTop = log.scrollHeight;
}

function renderRoom() {
  const ol = $("messages");
  ol.replaceChildren();
  $("search-results").hidden = true;
  const room = state.open.get(state.current);
  $("log-top").textContent = room && !room.more ? "The beginning of the room" : "";
  if (!room) return;
  const sorted = [...room.msgs.values()].sort((a, b) => a.msgid - b.msgid);
  ol.append(...sorted.map(messageEl));
  const log = $("log");
  log.scrollTop = log.scrollHeight;
  state.stick = true;
  showPeople(room.joined);
}

// Infinite scroll: near the top, the page before the oldest msgid held.
async function loadOlder(uri) {
  const room = state.open.get(uri);
  if (!room || !room.more || state.loading) return;
  state.loading = true;
  $("log-top").textContent = "Loading…";
  try {
    const page = await request("history", { room: uri, before: room.oldest || 0, count: PAGE });
    room.more = page.more || page.messages.length === PAGE;  // fewer: the room's first post
    addMessages(uri, page.messages);
    if (uri === state.current) {
      $("log-top").textContent = room.more ? "" : "The beginning of the room";
      const log = $("log");
      if (uri === state.current && room.more && log.scrollHeight <= log.clientHeight) setTimeout(() => loadOlder(uri), 0);
    }
  } finally {
    state.loading = false;
  }
}

function onScroll() {
  const log = $("log");
  state.stick = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  if (log.scrollTop < 80 && state.current) loadOlder(state.current);
}

async function searchHistory(ev) {
  ev.preventDefault();
  const text = $("history-search-text").value.trim();
  if (!text) return;
  const out = $("search-results");
  try {
    const found = await request("search", { room: state.current, text, count: PAGE });
    out.replaceChildren(...(found.messages.length ? found.messages.map(messageEl) : [note("No matches")]));
  } catch (e) { out.replaceChildren(note(e.message)); }
  out.hidden = false;
}

// ---- posting and files ----------------------------------------------------------------------

function newKey() {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  return "b" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

async function sendPost(room, text, key) {
  state.pendingPosts.set(key, { room, text });
  try {
    const posted = await request("post", { room, text, key });
    state.pendingPosts.delete(key);
    addMessages(room, [{ room, msgid: posted.msgid, author: state.me, ts: posted.ts, text }]);
    $("composer-status").textContent = "";
  } catch (e) {
    if (e.code) { state.pendingPosts.delete(key); $("composer-status").textContent = "Not sent: " + e.message; }
    // else: the connection dropped; resume() sends it again with the same key
  }
}

function submit(ev) {
  ev.preventDefault();
  const ta = $("text");
  const text = ta.value;
  if (!text.trim() || !state.current) return;
  const limit = state.limits.message_size_limit || 8000;
  if (text.length > limit) { $("composer-status").textContent = `At most ${limit} characters.`; return; }
  ta.value = "";
  sendPost(state.current, text, newKey());
}

async function upload(file) {
  const room = state.rooms.get(state.current);
  if (!room || !file) return;
  $("composer-status").textContent = "Uploading " + file.name + "…";
  try {
    if (!state.csrf) state.csrf = await csrfToken();
    const res = await fetch(`/api/rooms/${encodeURIComponent(room.id)}/files?name=${encodeURIComponent(file.name)}`, {
      method: "POST", body: file, credentials: "same-origin",
      headers: { "Content-Type": "application/octet-stream", "X-CSRF-Token": state.csrf },
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error || res.statusText);
    // The server announces the file in the room itself; it arrives as a live post.
    $("composer-status").textContent = body.post_error ? "Uploaded, not announced: " + body.post_error : "";
  } catch (e) { $("composer-status").textContent = "Upload failed: " + e.message; }
}

async function csrfToken() {
  const res = await fetch("/api/csrf", { credentials: "same-origin" });
  if (!res.ok) return "";
  return (await res.json()).token || "";
}

// ---- wiring -------------------------------------------------------------------------------

function wire() {
  $("room-search").addEventListener("submit", searchRooms);
  $("history-search").addEventListener("submit", searchHistory);
  $("history-search-clear").addEventListener("click", () => { $("search-results").hidden = true; $("history-search-text").value = ""; });
  $("composer").addEventListener("submit", submit);
  $("text").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) submit(ev);
  });
  $("log").addEventListener("scroll", onScroll);
  $("leave").addEventListener("click", leaveRoom);
  $("follow").addEventListener("click", toggleFollow);
  $("show-people").addEventListener("click", () => {
    const p = $("people");
    p.hidden = !p.hidden;
    $("show-people").setAttribute("aria-expanded", String(!p.hidden));
  });
  $("file").addEventListener("change", (ev) => { upload(ev.target.files[0]); ev.target.value = ""; });
  const drop = $("main");
  drop.addEventListener("dragover", (ev) => { if (state.current) { ev.preventDefault(); $("composer").classList.add("dragging"); } });
  drop.addEventListener("dragleave", () => $("composer").classList.remove("dragging"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    $("composer").classList.remove("dragging");
    if (ev.dataTransfer.files.length) upload(ev.dataTransfer.files[0]);
  });
  document.addEventListener("keydown", (ev) => {
    if ((ev.ctrlKey || ev.metaKey) && ev.key === "k") { ev.preventDefault(); $("room-search-text").focus(); }
  });
}

document.addEventListener("DOMContentLoaded", async () => {
  wire();
  renderLists();
  state.csrf = await csrfToken().catch(() => "");
  $("signout-csrf").value = state.csrf;
  connect();
});
