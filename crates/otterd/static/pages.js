// Otter dashboard, the fleet's pages: progressive enhancement only. Without this file the
// upload is a plain form, the preview comes from the Preview button and the rollout page
// shows its state when loaded. With it: an upload progress bar, the preview as the form
// changes, and a rollout page that follows its deployments live. No inline script anywhere.
"use strict";

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);

  // --- Upload with a progress bar -----------------------------------------------------------
  const upload = $("#upload-form");
  if (upload) {
    upload.addEventListener("submit", (event) => {
      event.preventDefault();
      const bar = $("#upload-progress");
      const status = $("#upload-status");
      const error = $("#upload-error");
      const button = upload.querySelector("button[type=submit]");
      error.hidden = true;
      bar.hidden = false;
      bar.value = 0;
      button.disabled = true;
      status.textContent = "Uploading…";
      const xhr = new XMLHttpRequest();
      xhr.open("POST", upload.action);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) {
          bar.value = Math.round((e.loaded / e.total) * 100);
          status.textContent = `Uploading… ${bar.value}%`;
        }
      });
      xhr.addEventListener("load", () => {
        button.disabled = false;
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
        if (xhr.status === 201 && body && body.url) {
          bar.value = 100;
          status.textContent = "Published.";
          window.location.assign(body.url);
          return;
        }
        bar.hidden = true;
        status.textContent = "";
        error.textContent = (body && body.message) ? `Refused: ${body.message}`
          : `The upload failed (HTTP ${xhr.status}). Reload the page and try again.`;
        error.hidden = false;
        error.focus && error.focus();
      });
      xhr.addEventListener("error", () => {
        button.disabled = false;
        bar.hidden = true;
        status.textContent = "";
        error.textContent = "The connection broke off during the upload.";
        error.hidden = false;
      });
      xhr.send(new FormData(upload));
    });
  }

  // --- Rollout preview as the form changes ---------------------------------------------------
  const rollout = $("#rollout-form");
  if (rollout) {
    const status = $("#preview-status");
    const body = $("#preview-table tbody");
    const previewId = $("#r-preview-id");
    let timer = null;
    let seq = 0;
    const refresh = async () => {
      const fields = ["release_id", "kind", "target", "stages"];
      const params = new URLSearchParams();
      for (const f of fields) params.set(f, rollout.elements[f].value);
      if (!params.get("release_id") || !params.get("target") || !params.get("stages")) return;
      const mine = ++seq;
      status.textContent = "Counting devices…";
      try {
        const resp = await fetch(`/ui/rollouts/preview.json?${params}`, {
          headers: { Accept: "application/json" }, credentials: "same-origin",
        });
        const data = await resp.json();
        if (mine !== seq) return;
        if (!resp.ok) {
          status.textContent = data.message || `The preview failed (HTTP ${resp.status}).`;
          body.replaceChildren();
          previewId.value = "";
          return;
        }
        previewId.value = data.rollout_id;
        body.replaceChildren(...data.stages.map((s) => {
          const tr = document.createElement("tr");
          for (const [v, num] of [[s.stage, false], [`${s.percent}%`, false], [s.devices, true], [s.cumulative, true]]) {
            const td = document.createElement("td");
            td.textContent = String(v);
            if (num) td.className = "num";
            tr.append(td);
          }
          return tr;
        }));
        status.textContent = `${data.targeted} devices in the target` +
          (data.beyond > 0 ? `; ${data.beyond} beyond the last stage are never reached.` : ".");
        $("#preview").classList.remove("pending");
      } catch (_) {
        if (mine === seq) status.textContent = "The preview could not be loaded; use the Preview button.";
      }
    };
    rollout.addEventListener("input", (e) => {
      if (!["release_id", "kind", "target", "stages"].includes(e.target.name)) return;
      previewId.value = "";
      clearTimeout(timer);
      timer = setTimeout(refresh, 300);
    });
    rollout.addEventListener("change", (e) => {
      if (e.target.tagName === "SELECT") { clearTimeout(timer); timer = setTimeout(refresh, 50); }
    });
    if (!previewId.value) refresh();
  }

  // --- A rollout's live view ------------------------------------------------------------------
  const live = $("#rollout-live");
  if (live) {
    const url = live.dataset.progress;
    const note = $("#live-status");
    const final = ["success", "failure", "rolled_back", "refused", "cancelled"];
    const failedStates = ["failure", "rolled_back", "refused"];
    const show = (r) => {
      const state = $("#rollout-state");
      state.textContent = r.state;
      state.className = `state state-${r.state}`;
      $("#rollout-reason").textContent = r.pause_reason || "";
      $("#rollout-stage").textContent = String(r.current_stage);
      for (const p of r.progress) {
        const row = live.querySelector(`tr[data-stage="${p.stage}"]`);
        if (!row) continue;
        row.classList.toggle("open", p.stage <= r.current_stage);
        let total = 0, done = 0, failed = 0, active = 0;
        for (const [name, n] of Object.entries(p.counts)) {
          const cell = row.querySelector(`td[data-state="${name}"]`);
          if (cell) cell.textContent = String(n);
          total += n;
          if (name === "success") done += n;
          else if (failedStates.includes(name)) failed += n;
          else if (!final.includes(name)) active += n;
        }
        const meter = row.querySelector("[data-field=meter]");
        meter.max = Math.max(total, 1);
        meter.value = done;
        row.querySelector("[data-field=summary]").textContent =
          `${done} succeeded, ${failed} failed, ${active} under way`;
      }
      for (const form of live.querySelectorAll("form[data-when]")) {
        form.hidden = !form.dataset.when.split(" ").includes(r.state);
      }
      note.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
    };
    // A tab nobody touches stops polling after a while, so that an open page does not keep a
    // session alive past its idle end; any key, click or scroll starts it again.
    const idleStopMs = 15 * 60 * 1000;
    let lastInput = Date.now();
    let stopped = false;
    const touched = () => {
      lastInput = Date.now();
      if (stopped) {
        stopped = false;
        poll();
      }
    };
    for (const ev of ["keydown", "pointerdown", "scroll"]) {
      window.addEventListener(ev, touched, { passive: true });
    }
    const poll = async () => {
      if (Date.now() - lastInput > idleStopMs) {
        stopped = true;
        note.textContent = "Live updates paused while the page is idle; press a key or click to resume.";
        return;
      }
      try {
        const resp = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
        if (resp.ok) show(await resp.json());
        else note.textContent = `Live updates stopped (HTTP ${resp.status}); reload the page.`;
        if (!resp.ok) return;
      } catch (_) {
        note.textContent = "Live updates are interrupted; retrying.";
      }
      setTimeout(poll, Number(live.dataset.interval || 2000));
    };
    setTimeout(poll, 1000);
  }
})();
