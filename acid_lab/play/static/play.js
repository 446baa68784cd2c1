// The playground page: every button sends one fetch() to the app and draws the state it answers.
"use strict";

const $ = (id) => document.getElementById(id);
let state = null;      // the page's state as the app last told it
let polling = false;   // a poll request is on its way
let freeSessions = ["T1", "T2"];

async function call(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body || {}),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

function say(text, isError) {
  const message = $("message");
  message.textContent = text || "";
  message.className = isError ? "error" : "";
}

async function open(body) {
  say("");
  if (state) await closePage();
  try {
    show(await call("/api/pages", body));
  } catch (error) {
    state = null;
    say(error.message, true);
  }
}

async function closePage() {
  const token = state.token;
  state = null;
  try { await call(`/api/pages/${token}/close`); } catch (error) { /* already gone */ }
}

async function act(action, body) {
  if (!state) return null;
  try {
    const answer = await call(`/api/pages/${state.token}/${action}`, body);
    show(answer);
    return answer;
  } catch (error) {
    say(error.message, true);
    return null;
  }
}

// -- drawing

function show(next) {
  // An answer older than what is drawn (a slow poll) must not undo a newer one.
  if (state && next.token === state.token && next.version < state.version) return;
  state = next;
  say("");
  drawAbout();
  drawTable();
  drawBoxes();
  drawVerdict();
  const scheduled = state.mode !== "free";
  $("next").disabled = !scheduled || state.next_step >= state.schedule.length;
  $("run-all").disabled = $("next").disabled;
  $("reset").disabled = false;
  if (Object.keys(state.pending).length && !polling) poll();
}

function drawAbout() {
  const about = $("about");
  about.replaceChildren();
  const title = document.createElement("h2");
  const level = state.level ? ` at ${state.level}` : " (the SQL does its own transaction control)";
  if (state.scenario) {
    title.textContent = `${state.scenario.code} — ${state.scenario.name}${level}`;
    const legend = document.createElement("p");
    legend.className = "legend";
    legend.textContent = state.scenario.legend;
    about.append(title, legend);
  } else {
    title.textContent = (state.mode === "script" ? "Your script" : "Free mode") + level;
    about.append(title);
  }
  if (state.parts.length > 1) {  // a pasted page: one of its scripts at a time
    const parts = element("select", "");
    parts.id = "part";
    parts.setAttribute("aria-label", "script of the page");
    state.parts.forEach((name, index) => {
      const option = element("option", name);
      option.value = String(index);
      option.selected = index === state.part;
      parts.append(option);
    });
    parts.addEventListener("change", () =>
      open({mode: "script", text: $("script").value, part: Number(parts.value)}));
    about.append(parts);
  }
}

function sessionsShown() {
  if (state.mode !== "free") return state.sessions;
  return [...new Set([...freeSessions, ...state.sessions])].sort();
}

function drawTable() {
  const sessions = sessionsShown();
  const head = $("timeline").tHead.rows[0];
  head.replaceChildren(element("th", "#"));
  for (const name of sessions) head.append(element("th", name));
  const body = $("timeline").tBodies[0];
  body.replaceChildren();
  let sent = state.earlier;  // free mode numbers the statements sent
  if (state.earlier) {  // the page keeps its latest statements only
    const tr = element("tr", "", "resume-row");
    const td = element("td", `${state.earlier} earlier statements not shown`);
    td.colSpan = sessions.length + 1;
    tr.append(td);
    body.append(tr);
  }
  for (const row of state.rows) {
    const tr = document.createElement("tr");
    if (row.step !== null) {
      tr.id = `step-${row.step + 1}`;
      tr.append(element("td", String(row.step + 1), "number"));
    } else if (row.cells.some((c) => c.kind === "step")) {
      tr.append(element("td", String(++sent), "number"));
    } else {
      tr.className = "resume-row";
      tr.append(element("td", "", "number"));
    }
    for (const name of sessions) {
      const cell = row.cells.find((c) => c.session === name);
      tr.append(cell ? drawCell(cell) : emptyCell(name));
    }
    body.append(tr);
  }
  state.schedule.slice(state.next_step).forEach((step, offset) => {
    const number = state.next_step + offset + 1;
    const tr = document.createElement("tr");
    tr.id = `step-${number}`;
    tr.className = "todo";
    tr.append(element("td", String(number), "number"));
    for (const name of sessions) {
      const td = emptyCell(name);
      if (name === step.session) td.append(element("code", step.sql));
      tr.append(td);
    }
    body.append(tr);
  });
}

function emptyCell(session) {
  const td = document.createElement("td");
  td.dataset.session = session;
  return td;
}

function drawCell(cell) {
  const entry = state.entries[cell.entry];
  const td = emptyCell(cell.session);
  td.dataset.kind = cell.kind;
  if (cell.kind === "resumes") {
    td.className = "resumed" + (failed(entry) ? " aborts" : "");
    td.append(badge("resumes", "RESUMES"), outcome(entry));
    return td;
  }
  if (entry.begin) td.append(element("div", `(implicit) ${entry.begin};`, "begin"));
  td.append(element("code", entry.sql));
  if (entry.blocked) {
    td.className = "waits";
    td.append(badge("waits", "WAITS"));
  } else if (entry.state === "running") {
    td.className = "running";
    td.append(element("span", "running…", "note"));
  } else {
    if (failed(entry)) td.className = "aborts";
    td.append(outcome(entry));
  }
  if (entry.state !== "done") {
    const cancel = element("button", "cancel", "cancel");
    cancel.type = "button";
    cancel.addEventListener("click", () => act("cancel", {session: entry.session}));
    td.append(cancel);
  }
  return td;
}

function failed(entry) {
  return entry.status === "error" || (entry.command === "ROLLBACK" && /^\s*(commit|end)\b/i.test(entry.sql));
}

function outcome(entry) {
  const box = element("div", "", "outcome");
  if (entry.status === "error") {
    box.append(element("span", `ERROR ${entry.sqlstate || "?"}: ${entry.error}`, "error"));
    return box;
  }
  if (entry.rows !== null) box.append(rowsTable(entry));
  box.append(element("span", entry.command || "OK", "command"));
  return box;
}

function rowsTable(entry) {
  const table = element("table", "", "rows");
  const head = document.createElement("tr");
  for (const column of entry.columns || []) head.append(element("th", column));
  table.append(head);
  for (const row of entry.rows) {
    const tr = document.createElement("tr");
    for (const value of row) tr.append(element("td", value === null ? "NULL" : String(value)));
    table.append(tr);
  }
  if (!entry.rows.length) table.append(element("caption", "no rows"));
  if (entry.truncated) table.append(element("caption", "truncated: the page keeps the first rows and characters only"));
  return table;
}

function drawBoxes() {
  const free = state.mode === "free";
  $("free").hidden = !free;
  if (!free) return;
  const boxes = $("boxes");
  for (const name of sessionsShown()) {
    if (!$(`sql-${name}`)) {
      const box = element("div", "", "box");
      const text = element("textarea", "");
      text.id = `sql-${name}`;
      text.rows = 3;
      text.spellcheck = false;
      text.placeholder = `SQL for ${name}`;
      text.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) send(name);
      });
      const button = element("button", `Run on ${name}`);
      button.id = `send-${name}`;
      button.type = "button";
      button.addEventListener("click", () => send(name));
      box.append(element("label", name), text, button);
      boxes.append(box);
    }
    $(`send-${name}`).disabled = name in state.pending;
  }
  $("add-session").disabled = sessionsShown().length >= 4;
}

function drawVerdict() {
  const verdict = $("verdict");
  verdict.hidden = !state.verdict;
  if (!state.verdict) return;
  const prevented = state.verdict === "prevented";
  verdict.className = "verdict " + state.verdict;
  verdict.textContent = `${prevented ? "✓ prevented" : "✗ possible"} at ${state.level}: ` +
    (prevented ? "the anomaly did not happen (the server made a session wait, aborted one, or kept its snapshot)."
               : "the anomaly happened, just now, on this server.");
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function badge(kind, text) {
  return element("span", text, `badge ${kind}`);
}

// -- actions

async function poll() {
  polling = true;
  try {
    while (state && Object.keys(state.pending).length) {
      const token = state.token;
      let answer;
      try {
        answer = await call(`/api/pages/${token}/poll`);
      } catch (error) {
        if (state && state.token === token) say(error.message, true);
        break;
      }
      if (!state || state.token !== token) break;
      show(answer);
    }
  } finally {
    polling = false;
  }
}

async function send(name) {
  const sql = $(`sql-${name}`).value;
  await act("run", {session: name, sql: sql});
}

async function runAll() {
  $("run-all").disabled = true;
  while (state && state.mode !== "free" && state.next_step < state.schedule.length) {
    if (!(await act("next"))) break;
  }
}

$("load-scenario").addEventListener("click", () =>
  open({mode: "scenario", code: $("scenario").value, level: $("level").value}));
$("load-free").addEventListener("click", () => {
  freeSessions = ["T1", "T2"];
  $("boxes").replaceChildren();
  open({mode: "free", level: $("free-level").value});
});
$("load-script").addEventListener("click", () => open({mode: "script", text: $("script").value}));
$("next").addEventListener("click", () => act("next"));
$("run-all").addEventListener("click", runAll);
$("reset").addEventListener("click", () => {
  if (state && state.mode === "free") $("boxes").replaceChildren();
  act("reset");
});
$("add-session").addEventListener("click", () => {
  const name = `T${sessionsShown().length + 1}`;
  freeSessions.push(name);
  if (state) show(state);
});
window.addEventListener("pagehide", () => {
  if (state) navigator.sendBeacon(`/api/pages/${state.token}/close`);
});
