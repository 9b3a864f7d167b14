// Admin page: results tables from /api/summary.json and downloads, authorised by the admin token
// (taken from the #token=... fragment, which never reaches the server, or typed in).
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("speechmax-admin-token");
let summary = null;

async function fetchAdmin(path) {
  const response = await fetch(path, {headers: {Authorization: `Bearer ${token}`}});
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.detail || response.statusText);
  }
  return response;
}

function fixed(x, digits = 2) { return x === null || x === undefined ? "–" : x.toFixed(digits); }
function percent(x) { return x === null || x === undefined ? "–" : `${(100 * x).toFixed(0)}%`; }

function cell(row, content, className) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content); else td.textContent = content;
  if (className) td.className = className;
  row.append(td);
  return td;
}

// A bar from lo..hi of the axis with a whisker for the interval; positions set through CSSOM (CSP-safe).
function bar(value, lo, hi, axisMin, axisMax) {
  const box = document.createElement("div");
  box.className = "bar";
  if (value === null) return box;
  const at = (x) => `${(100 * (x - axisMin)) / (axisMax - axisMin)}%`;
  const fill = document.createElement("div");
  fill.className = "value";
  fill.style.width = at(value);
  box.append(fill);
  if (lo !== null) {
    const whisker = document.createElement("div");
    whisker.className = "whisker";
    whisker.style.left = at(lo);
    whisker.style.width = `calc(${at(hi)} - ${at(lo)})`;
    box.append(whisker);
  }
  return box;
}

function scoreCells(row, entry) {
  const {mos, accuracy} = entry;
  cell(row, String(mos.n), "num");
  const mosText = document.createElement("span");
  mosText.textContent = fixed(mos.mean);
  const mosCi = document.createElement("span");
  mosCi.className = "ci";
  mosCi.textContent = mos.lo === null ? "" : ` [${fixed(mos.lo)}, ${fixed(mos.hi)}]`;
  cell(row, "", "num").append(mosText, mosCi);
  cell(row, bar(mos.mean, mos.lo, mos.hi, 1, 5));
  const accText = document.createElement("span");
  accText.textContent = accuracy.n ? `${percent(accuracy.p)} (${accuracy.k}/${accuracy.n})` : "–";
  const accCi = document.createElement("span");
  accCi.className = "ci";
  accCi.textContent = accuracy.n ? ` [${percent(accuracy.lo)}, ${percent(accuracy.hi)}]` : "";
  cell(row, "", "num").append(accText, accCi);
  cell(row, bar(accuracy.p, accuracy.lo, accuracy.hi, 0, 1));
}

function table(element, headings, rows, fillRow) {
  element.replaceChildren();
  const head = element.createTHead().insertRow();
  for (const heading of headings) {
    const th = document.createElement("th");
    th.textContent = heading;
    head.append(th);
  }
  const body = element.createTBody();
  for (const entry of rows) fillRow(body.insertRow(), entry);
}

const SCORE_HEADINGS = ["Ratings", "MOS [95% CI]", "", "Identified [95% CI]", ""];

function render() {
  const r = summary.raters;
  $("set-name").textContent = summary.set;
  $("overview").textContent =
    `${summary.answers.total} answers from ${r.total} rater${r.total === 1 ? "" : "s"}: ${r.ok} passed the checks, ` +
    `${r.pending} not yet checked, ${r.failed} failed (left out: ${summary.answers.total - summary.answers.included} answers).`;
  table($("conditions"), ["Condition", "Roles", ...SCORE_HEADINGS], summary.conditions, (row, c) => {
    cell(row, c.condition);
    cell(row, c.roles.join(", "), "muted");
    scoreCells(row, c);
  });
  table($("classes"), ["Word", ...SCORE_HEADINGS], summary.classes, (row, c) => {
    cell(row, c.word);
    scoreCells(row, c);
  });
  const holder = $("condition-classes");
  holder.replaceChildren();
  for (const condition of summary.conditions) {
    const details = document.createElement("details");
    const title = document.createElement("summary");
    title.textContent = condition.condition;
    const inner = document.createElement("table");
    details.append(title, inner);
    holder.append(details);
    table(inner, ["Word", ...SCORE_HEADINGS], condition.classes, (row, c) => {
      cell(row, c.word === null ? "(no word)" : c.word);
      scoreCells(row, c);
    });
  }
  table($("raters"), ["Rater", "Answers", "Status", "References identified", "Reference MOS", "Anchor MOS", "Why"],
    r.list, (row, s) => {
      cell(row, String(s.rater_id), "num");
      cell(row, String(s.answers), "num");
      cell(row, s.status, `status-${s.status}`);
      cell(row, s.references ? `${s.reference_correct}/${s.references}` : "–", "num");
      cell(row, fixed(s.reference_mos), "num");
      cell(row, fixed(s.anchor_mos), "num");
      cell(row, s.reasons.join("; "), "muted");
    });
  $("results").hidden = false;
  $("toolbar").hidden = false;
}

async function load() {
  $("message").textContent = "";
  try {
    summary = await (await fetchAdmin("/api/summary.json")).json();
    sessionStorage.setItem("speechmax-admin-token", token);
    $("login").hidden = true;
    render();
  } catch (error) {
    $("message").textContent = `Could not load the results: ${error.message}`;
    $("login").hidden = false;
  }
}

async function download(path, filename) {
  try {
    const blob = await (await fetchAdmin(path)).blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = filename;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  } catch (error) {
    $("message").textContent = `Download failed: ${error.message}`;
  }
}

function safeName() { return (summary ? summary.set : "listening").replace(/[^A-Za-z0-9_-]/g, "_"); }

document.addEventListener("DOMContentLoaded", () => {
  const fromFragment = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromFragment) {
    token = fromFragment;
    history.replaceState(null, "", location.pathname);  // keep the token out of history and screenshots
  }
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("admin-token").value;
    load();
  });
  $("refresh").addEventListener("click", load);
  $("download-csv").addEventListener("click", () => download("/api/answers.csv", `${safeName()}-answers.csv`));
  $("download-json").addEventListener("click", () => download("/api/summary.json", `${safeName()}-summary.json`));
  if (token) load();
});
