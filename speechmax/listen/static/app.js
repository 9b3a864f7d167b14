// Rater page: intro -> one trial at a time -> done. The token lives in localStorage so a reload resumes.
"use strict";

const $ = (id) => document.getElementById(id);
let tokenKey = "speechmax-listen";
let token = null;
let trial = null;      // {clip_id, audio}
let played = false;

async function api(path, options = {}) {
  const headers = {"Content-Type": "application/json"};
  if (token) headers["X-Rater-Token"] = token;
  const response = await fetch(path, {...options, headers});
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    const error = new Error(detail || response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

function showOnly(id) {
  for (const section of ["intro", "trial", "done", "failure"]) $(section).hidden = section !== id;
}

function fail(error) {
  $("failure-text").textContent = error.message;
  showOnly("failure");
}

function chosen(name) {
  const input = document.querySelector(`input[name="${name}"]:checked`);
  return input ? input.value : null;
}

function updateNext() {
  $("next").disabled = !(played && chosen("rating") && chosen("word"));
}

function setPlayed(value) {
  played = value;
  $("rating").disabled = !value;
  $("words").disabled = !value;
  $("play-hint").textContent = value ? "You can replay the clip." : "Listen to the clip to answer.";
  updateNext();
}

function showSession(session) {
  $("progress").hidden = false;
  $("progress-fill").style.width = `${(100 * session.done) / Math.max(session.total, 1)}%`;
  if (!session.next) {
    $("progress-text").textContent = `${session.total} of ${session.total}`;
    showOnly("done");
    return;
  }
  $("progress-text").textContent = `Clip ${session.done + 1} of ${session.total}`;
  trial = session.next;
  for (const input of document.querySelectorAll("#trial input")) input.checked = false;
  $("error").textContent = "";
  $("play").innerHTML = "&#9654; Play";
  const audio = $("audio");
  audio.src = trial.audio;
  setPlayed(false);
  showOnly("trial");
  $("play").focus();
}

function buildWordGrid(words, none) {
  const grid = $("word-grid");
  for (const word of [...words, none]) {
    const label = document.createElement("label");
    label.className = word === none ? "choice none" : "choice";
    const input = document.createElement("input");
    input.type = "radio";
    input.name = "word";
    input.value = word;
    const text = document.createElement("span");
    text.textContent = word === none ? "none / can't tell" : word;
    label.append(input, text);
    grid.append(label);
  }
}

async function start() {
  $("start").disabled = true;
  try {
    const label = new URLSearchParams(location.search).get("label") || "";
    const session = await api("/api/raters", {method: "POST", body: JSON.stringify({label})});
    token = session.token;
    localStorage.setItem(tokenKey, token);
    showSession(session);
  } catch (error) {
    fail(error);
  }
}

async function submit() {
  const next = $("next");
  next.disabled = true;
  next.textContent = "Saving…";
  try {
    const body = {clip_id: trial.clip_id, rating: Number(chosen("rating")), word: chosen("word")};
    showSession(await api("/api/answers", {method: "POST", body: JSON.stringify(body)}));
  } catch (error) {
    // Submitting again is safe: the server stores an identical answer once.
    $("error").textContent = `Could not save your answer (${error.message}). Please try again.`;
    updateNext();
  } finally {
    next.textContent = "Next";
  }
}

function play() {
  const audio = $("audio");
  audio.currentTime = 0;
  audio.play().catch((error) => { $("error").textContent = `Could not play the clip: ${error.message}`; });
}

async function init() {
  $("play").addEventListener("click", play);
  $("audio").addEventListener("ended", () => { setPlayed(true); $("play").innerHTML = "&#8635; Play again"; });
  $("audio").addEventListener("error", () => { $("error").textContent = "The clip could not be loaded."; });
  $("trial").addEventListener("change", updateNext);
  $("next").addEventListener("click", submit);
  $("start").addEventListener("click", start);
  try {
    const info = await api("/api/info");
    tokenKey = `speechmax-listen:${info.name}`;
    buildWordGrid(info.words, info.none);
    const minutes = Math.max(1, Math.round((info.trials * 10) / 60));
    $("intro-count").textContent = `There are ${info.trials} clips; this takes about ${minutes} minute${minutes > 1 ? "s" : ""}.`;
    token = localStorage.getItem(tokenKey);
    if (token) {
      try {
        showSession(await api("/api/session"));
        return;
      } catch (error) {
        if (error.status !== 401) throw error;
        localStorage.removeItem(tokenKey);  // issued by another database: start afresh
        token = null;
      }
    }
    showOnly("intro");
  } catch (error) {
    fail(error);
  }
}

document.addEventListener("DOMContentLoaded", init);
