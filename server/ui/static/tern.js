// The dashboard's few scripts: artifact upload with progress, live regions, confirmations.
"use strict";

// Upload: the file is the request body, streamed by the browser; the bar follows the bytes sent.
function upload(form) {
  const file = form.elements.file.files[0];
  const progress = form.querySelector("progress");
  const status = form.querySelector("[role=status]");
  const description = encodeURIComponent(form.elements.description.value);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", `${form.action}?description=${description}`);
  xhr.setRequestHeader("X-CSRFToken", form.elements.csrf_token.value);
  xhr.setRequestHeader("Accept", "application/json");
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  xhr.upload.onprogress = (event) => {
    if (!event.lengthComputable) return;
    progress.max = event.total;
    progress.value = event.loaded;
    status.textContent = `${Math.floor((100 * event.loaded) / event.total)} % sent`;
  };
  xhr.upload.onload = () => { status.textContent = "validating…"; };
  xhr.onload = () => {
    let answer = {};
    try { answer = JSON.parse(xhr.responseText); } catch (error) { /* not JSON */ }
    if (xhr.status === 201) {
      window.location.assign(answer.url);
    } else {
      status.textContent = `Upload failed (${xhr.status}): ${answer.error || xhr.statusText}`;
      form.querySelector("button").disabled = false;
    }
  };
  xhr.onerror = () => {
    status.textContent = "Upload failed: the connection was lost.";
    form.querySelector("button").disabled = false;
  };
  progress.hidden = false;
  form.querySelector("button").disabled = true;
  status.textContent = "0 % sent";
  xhr.send(file);
}

// A live region: swapped for a fresh copy (data-fragment) whenever the server's event stream
// (data-events) says something in it changed, until the server sends it without data-events
// (the deployment has ended). No polling: the EventSource reconnects on its own, resuming
// after the last event it saw. Focus stays on the element with the same id.
const LIVE_EVENTS = ["deployment.device_status", "deployment.device_finished",
  "deployment.device_added", "deployment.finished", "deployment.aborted"];

function follow(region) {
  let source = null, current = region, busy = false, again = false;
  async function update() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const response = await fetch(current.dataset.fragment, { headers: { Accept: "text/html" } });
      if (response.redirected) {  // logged out: the login page
        source.close();
        window.location.reload();
        return;
      }
      if (response.ok) {
        const focused = current.contains(document.activeElement) ? document.activeElement.id : "";
        const template = document.createElement("template");
        template.innerHTML = (await response.text()).trim();
        const fresh = template.content.firstElementChild;
        current.replaceWith(fresh);
        activate(fresh);
        if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
        current = fresh;
        if (!fresh.dataset.events) source.close();
      }
    } catch (error) {
      // the server is restarting, or the network is away: the next event tries again
    }
    busy = false;
    if (again) { again = false; update(); }
  }
  // An EventSource reconnects by itself after a dropped connection, but gives up on an HTTP
  // error (a 503 when the server has its maximum of streams open): open a new one later.
  function connect() {
    source = new EventSource(current.dataset.events);
    LIVE_EVENTS.forEach((type) => source.addEventListener(type, update));
    source.addEventListener("open", update);  // (re)connected: catch up with what was missed
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED && current.dataset.events) {
        window.setTimeout(connect, 5000);
      }
    });
  }
  connect();
}

function activate(root) {
  root.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("form[data-upload]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      upload(form);
    });
  });
  activate(document);
  document.querySelectorAll("[data-events]").forEach(follow);
});
