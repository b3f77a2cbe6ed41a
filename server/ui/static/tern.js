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

// A live region: fetched again every 2 s and swapped in, until the server sends it without
// data-refresh (the deployment has ended). Focus stays on the element with the same id.
function refresh(element) {
  window.setTimeout(async () => {
    let response;
    try {
      response = await fetch(element.dataset.refresh, { headers: { Accept: "text/html" } });
    } catch (error) {
      refresh(element);  // the server is restarting, or the network is away: try again
      return;
    }
    if (response.redirected) {  // logged out: the login page
      window.location.reload();
      return;
    }
    if (!response.ok) {
      refresh(element);
      return;
    }
    const focused = element.contains(document.activeElement) ? document.activeElement.id : "";
    const template = document.createElement("template");
    template.innerHTML = (await response.text()).trim();
    const fresh = template.content.firstElementChild;
    element.replaceWith(fresh);
    activate(fresh);
    if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
    if (fresh.dataset.refresh) refresh(fresh);
  }, 2000);
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
  document.querySelectorAll("[data-refresh]").forEach(refresh);
});
