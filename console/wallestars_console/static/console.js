// Live updates for the console's pages, over the API's Server-Sent Events (the session
// cookie authorizes the stream). Pages work without this script; it only keeps the task
// list, a task's page and the agents table current without reloading.
"use strict";
(function () {
  const ns = document.body.dataset.ns;
  if (!ns) return;
  const tasks = document.getElementById("tasks");
  const task = document.getElementById("task");
  const agents = document.getElementById("agents");
  if (!(tasks && tasks.dataset.live) && !task && !agents) return;

  function matches(t, filters) {
    if (filters.phase && t.status !== filters.phase) return false;
    if (filters.type && t.type !== filters.type) return false;
    if (filters.agent && t.agent !== filters.agent) return false;
    return !filters.labelSelector; // label filters: left to a reload
  }

  function fill(row, t) {
    const badge = row.querySelector(".phase .badge");
    badge.textContent = t.status;
    badge.className = "badge phase-" + t.status.toLowerCase();
    const bar = row.querySelector("progress");
    bar.value = t.progress;
    bar.textContent = t.progress + "%";
    row.querySelector(".pct").textContent = t.progress + "%";
    row.querySelector(".agent").textContent = t.agent;
  }

  function onTask(t) {
    if (tasks && tasks.dataset.live) {
      let row = tasks.querySelector('tr[data-task="' + CSS.escape(t.name) + '"]');
      const filters = JSON.parse(tasks.dataset.filters || "{}");
      // The stream starts with the newest tasks: only those made after the page was
      // drawn are new rows (RFC 3339 times in UTC compare as text; the page's second
      // itself is left to a reload).
      if (!row && matches(t, filters) && t.createdAt > (tasks.dataset.since || "")) {
        const tpl = document.getElementById("row-template").content.firstElementChild.cloneNode(true);
        tpl.dataset.task = t.name;
        const link = tpl.querySelector("a");
        link.href = "/ui/ns/" + ns + "/tasks/" + encodeURIComponent(t.name);
        link.textContent = t.name;
        tpl.querySelector("progress").setAttribute("aria-label", "progress of " + t.name);
        tpl.querySelector(".type").textContent = t.type;
        tpl.querySelector(".priority").textContent = t.priority;
        tpl.querySelector("time").textContent = t.createdAt;
        const empty = tasks.querySelector("tr.empty");
        if (empty) empty.remove();
        tasks.tBodies[0].prepend(tpl);
        row = tpl;
      }
      if (row) fill(row, t);
    }
    if (task && t.name === task.dataset.task) {
      const phase = document.getElementById("task-phase");
      phase.textContent = t.status;
      phase.className = "badge phase-" + t.status.toLowerCase();
      document.getElementById("task-progress").value = t.progress;
      document.getElementById("task-pct").textContent = t.progress + "%";
      document.getElementById("task-reason").textContent = t.reason + (t.message ? ": " + t.message : "");
    }
  }

  function onComplete(t) {
    if (!task || t.name !== task.dataset.task || task.dataset.finished === "1") return;
    task.dataset.finished = "1";
    fetch("/ui/ns/" + ns + "/tasks/" + encodeURIComponent(t.name) + "/results", { credentials: "same-origin" })
      .then((r) => (r.ok ? r.text() : Promise.reject(r.status)))
      .then((html) => {
        const doc = new DOMParser().parseFromString(html, "text/html");
        const fresh = doc.getElementById("results-fragment");
        if (fresh) document.getElementById("results").replaceChildren(...fresh.childNodes);
      })
      .catch(() => {});
  }

  function onAgent(a) {
    if (!agents) return;
    const row = agents.querySelector('tr[data-agent="' + CSS.escape(a.name) + '"]');
    if (!row) return;
    row.querySelector(".ready").textContent = a.ready.status + (a.ready.reason ? " (" + a.ready.reason + ")" : "");
    row.querySelector(".load").textContent = a.activeTasks + " / " + a.slots;
    row.querySelector(".queued").textContent = a.queuedTasks;
  }

  const status = document.getElementById("live-status");
  // With the stream's snapshot: whatever changed between the page being drawn and the
  // stream opening (a task that finished, an Agent that became Ready) is in it.
  const source = new EventSource("/api/v1/namespaces/" + encodeURIComponent(ns) + "/events");
  source.addEventListener("task:update", (e) => onTask(JSON.parse(e.data)));
  source.addEventListener("agent:status", (e) => onAgent(JSON.parse(e.data)));
  source.onmessage = null;
  source.addEventListener("error", () => { if (status) status.textContent = "Live updates paused; reconnecting."; });
  source.addEventListener("open", () => { if (status) status.textContent = "Following changes live."; });
  // task:<id>:complete carries the task's UID in its name.
  if (task) {
    source.addEventListener("task:" + task.dataset.id + ":complete", (e) => onComplete(JSON.parse(e.data)));
  }
})();
