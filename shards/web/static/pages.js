// pchat's management pages: small helpers over plain forms. Every form works without this
// script except the file upload, which sends the file's bytes as the file store expects.
"use strict";

function onReady(fn) {
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", fn);
  else fn();
}

// The category decides who may be chosen: changing it redraws the create form.
function categoryReload() {
  const select = document.querySelector("select[data-reload=category]");
  if (!select) return;
  select.addEventListener("change", () => {
    const url = new URL("/rooms/new", location.href);
    url.searchParams.set("category", select.value);
    location.assign(url.toString());
  });
}

// "Check name" asks the server without leaving the page (the button posts the form when
// there is no script).
function checkName() {
  const button = document.getElementById("check-name");
  const input = document.getElementById("name");
  const out = document.getElementById("name-check");
  if (!button || !input || !out) return;
  button.addEventListener("click", async (event) => {
    event.preventDefault();
    const name = input.value.trim();
    if (!name) { out.textContent = "Type a name to check."; return; }
    const url = new URL("/rooms/check-name", location.href);
    url.searchParams.set("name", name);
    url.searchParams.set("room", button.dataset.check || "");
    const reply = await fetch(url, { credentials: "same-origin" });
    if (!reply.ok) { out.textContent = "Could not check the name (" + reply.status + ")."; return; }
    const found = await reply.json();
    out.textContent = found.free ? "'" + name + "' is free." : "'" + name + "' is taken; choose another name.";
  });
}

// A filter box above each picker: typing hides the people who do not match.
function pickerFilters() {
  document.querySelectorAll(".picker[data-filter]").forEach((list, index) => {
    const id = "filter-" + index;
    const wrap = document.createElement("p");
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = "Filter " + list.dataset.filter.toLowerCase();
    const input = document.createElement("input");
    input.type = "text";
    input.id = id;
    input.addEventListener("input", () => {
      const want = input.value.trim().toLowerCase();
      list.querySelectorAll("label").forEach((row) => {
        row.hidden = want !== "" && !row.textContent.toLowerCase().includes(want);
      });
    });
    wrap.append(label, input);
    list.before(wrap);
  });
}

// Upload: the file's bytes go to the file store's route with the session's token.
function upload() {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const status = document.getElementById("upload-status");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = document.getElementById("upload-file").files[0];
    if (!file) { status.textContent = "Choose a file first."; return; }
    const url = new URL("/api/rooms/" + encodeURIComponent(form.dataset.room) + "/files", location.href);
    url.searchParams.set("name", file.name);
    status.textContent = "Uploading " + file.name + "…";
    let reply;
    try {
      reply = await fetch(url, {
        method: "POST",
        body: file,
        credentials: "same-origin",
        headers: { "Content-Type": "application/octet-stream", "X-CSRF-Token": form.dataset.csrf },
      });
    } catch (err) {
      status.textContent = "Upload failed: the connection was closed (" + err + ").";
      return;
    }
    if (reply.status === 201) {
      status.textContent = "Uploaded " + file.name + ".";
      location.replace(location.pathname + "#files");
      location.reload();
      return;
    }
    let why = "";
    try { why = (await reply.json()).error || ""; } catch (err) { why = reply.statusText; }
    status.textContent = "Upload refused (" + reply.status + "): " + why;
  });
}

onReady(() => { categoryReload(); checkName(); pickerFilters(); upload(); });
