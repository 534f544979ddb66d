// All data goes through textContent: task ids, arguments and progress are user data.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const q = token ? "?token=" + encodeURIComponent(token) : "";

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

function fill(id, rows, build) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const r of rows) build(body.insertRow(), r);
}

function abort(taskId, button) {
  button.disabled = true;
  fetch("abort/" + encodeURIComponent(taskId) + q, { method: "POST" });
}

function render(s) {
  document.getElementById("broker").textContent = s.broker;
  const status = document.getElementById("status");
  status.textContent = s.error ? s.error : "live " + new Date().toLocaleTimeString();
  status.className = s.error ? "error" : "";
  const tasks = [];
  for (const w of s.workers) for (const t of w.running || []) tasks.push([w.worker, t]);
  fill("tasks", tasks, (row, [worker, t]) => {
    row.dataset.taskId = t.task_id;
    cell(row, worker);
    cell(row, t.task);
    cell(row, t.task_id, "id");
    cell(row, t.seconds);
    cell(row, t.progress === null ? "" : JSON.stringify(t.progress), "progress");
    const b = document.createElement("button");
    b.textContent = "abort";
    b.className = "abort";
    b.onclick = () => abort(t.task_id, b);
    row.insertCell().append(b);
  });
  fill("workers", s.workers, (row, w) => {
    cell(row, w.worker);
    cell(row, (w.queues || []).join(", "));
    cell(row, w.parallelism);
    cell(row, (w.running || []).length);
  });
  fill("queues", s.queues, (row, x) => {
    cell(row, x.queue + (x.queue === s.dead_letter_queue ? " (dead letters)" : ""));
    cell(row, x.messages === null ? "missing" : x.messages);
    cell(row, x.consumers);
  });
  const ul = document.getElementById("schedulers");
  ul.replaceChildren();
  for (const sc of s.schedulers) {
    const li = document.createElement("li");
    li.textContent = sc.scheduler + " (" + (sc.role || "?") + ")";
    const schedules = document.createElement("ul");
    for (const one of sc.schedules || []) {
      const item = document.createElement("li");
      item.className = "schedule";
      item.textContent = one.name + ": " + one.task + ", next due " + one.next_due;
      schedules.append(item);
    }
    li.append(schedules);
    ul.append(li);
  }
}

const source = new EventSource("events" + q);
source.onmessage = (e) => render(JSON.parse(e.data));
source.onerror = () => { document.getElementById("status").textContent = "reconnecting…"; };
