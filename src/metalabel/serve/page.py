"""The labeling page: one HTML document with its style and script, no build step, nothing fetched from outside.

Everything from the data (uris, text, class names) is put on the page as text nodes
(``textContent``), never as HTML, so an item cannot inject markup or script.
"""

POLL_S = 1.0
"""How often a page waiting for a run's next questions asks for them (``PAGE`` reads it)."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>metalabel</title>
<style>
  :root { --ink: #1d2330; --muted: #5d6778; --line: #d8dde6; --accent: #2857c5; --ok: #1d7a46; --bad: #b3261e; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink);
         background: #f6f7f9; }
  header { display: flex; gap: 1.5rem; align-items: center; padding: .6rem 1.2rem; background: #fff;
           border-bottom: 1px solid var(--line); }
  header h1 { font-size: 1.05rem; margin: 0; }
  nav button { border: 1px solid var(--line); background: #fff; padding: .3rem .8rem; border-radius: 6px;
               cursor: pointer; font: inherit; }
  nav button[aria-pressed="true"] { background: var(--accent); color: #fff; border-color: var(--accent); }
  #progress { margin-left: auto; color: var(--muted); }
  #bar { height: 4px; background: var(--line); }
  #bar div { height: 4px; background: var(--accent); width: 0; transition: width .2s; }
  main { display: grid; grid-template-columns: minmax(0, 3fr) minmax(18rem, 2fr); gap: 1.5rem; padding: 1.2rem;
         max-width: 1400px; margin: 0 auto; }
  #item { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 1rem;
          display: flex; flex-direction: column; align-items: center; justify-content: center; min-height: 60vh; }
  #item img { width: min(100%, 64vh); max-height: 70vh; object-fit: contain; image-rendering: pixelated;
              background: #000; }
  #item .text { font-size: 1.15rem; line-height: 1.6; white-space: pre-wrap; max-width: 70ch; align-self: stretch;
                overflow-wrap: anywhere; max-height: 70vh; overflow: auto; }
  #uri { color: var(--muted); font-size: .85rem; margin-top: .6rem; overflow-wrap: anywhere; }
  aside { display: flex; flex-direction: column; gap: 1rem; }
  .box { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: .8rem 1rem; }
  .label { font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
  #suggestion strong { font-size: 1.2rem; }
  #classes { display: grid; grid-template-columns: repeat(auto-fill, minmax(9rem, 1fr)); gap: .5rem; }
  #classes button, #actions button { font: inherit; padding: .55rem .7rem; border-radius: 8px; cursor: pointer;
      border: 1px solid var(--line); background: #fff; text-align: left; }
  #classes button:hover, #actions button:hover { border-color: var(--accent); }
  #classes button.suggested { border-color: var(--ok); box-shadow: inset 0 0 0 1px var(--ok); }
  #classes button.earlier { background: #eef3ff; }
  kbd { display: inline-block; min-width: 1.4em; padding: 0 .3em; margin-right: .4em; border: 1px solid #b8bfcc;
        border-bottom-width: 2px; border-radius: 4px; font: .85em ui-monospace, monospace; text-align: center;
        color: var(--muted); background: #fafbfc; }
  #actions { display: flex; flex-wrap: wrap; gap: .5rem; }
  #status { min-height: 1.5em; color: var(--muted); }
  #status.ok { color: var(--ok); } #status.bad { color: var(--bad); }
  #empty { grid-column: 1 / -1; text-align: center; padding: 4rem 1rem; font-size: 1.2rem; color: var(--muted); }
  [hidden] { display: none !important; }
</style>
</head>
<body>
<header>
  <h1>metalabel</h1>
  <nav id="modes" hidden>
    <button id="mode-questions" data-mode="questions">Questions</button>
    <button id="mode-review" data-mode="review">Review model labels</button>
  </nav>
  <span id="progress"></span>
</header>
<div id="bar"><div></div></div>
<main>
  <section id="item" aria-live="polite"></section>
  <aside id="panel">
    <div class="box"><div class="label">Why this item</div><div id="why"></div></div>
    <div class="box"><div class="label" id="suggestion-label">Model suggests</div><div id="suggestion"></div></div>
    <div class="box" id="current-box"><div class="label">Label now</div><div id="current"></div></div>
    <div class="box"><div class="label">Class</div><div id="classes"></div></div>
    <div id="actions">
      <button id="accept"><kbd>Enter</kbd>accept suggestion</button>
      <button id="skip"><kbd>S</kbd><span id="skip-text">skip (can't tell)</span></button>
      <button id="undo"><kbd>U</kbd>undo last answer</button>
      <button id="stop" hidden>stop labeling</button>
    </div>
    <div id="status" role="status"></div>
  </aside>
  <div id="empty" hidden></div>
</main>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
let mode = new URLSearchParams(location.search).get("mode") === "review" ? "review" : "questions";
let state = null, busy = false, digits = "", digitTimer = null, pollTimer = null;
const $ = (id) => document.getElementById(id);

function api(path, body) {
  const url = path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
  return fetch(url, body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"},
                                              body: JSON.stringify(body)})
    .then(async (response) => {
      const data = await response.json().catch(() => ({error: response.statusText}));
      if (!response.ok) throw new Error(data.error || response.statusText);
      return data;
    });
}

function say(text, kind) { const s = $("status"); s.textContent = text; s.className = kind || ""; }

function load() {
  return api("/api/state?mode=" + mode).then(show).catch((e) => {
    say("The server cannot be reached (" + e.message + "). Every answer shown as saved is in the project.", "bad");
  });
}

function show(next) {
  state = next;
  const task = state.task, p = state.progress;
  $("modes").hidden = !state.review_enabled;
  for (const b of document.querySelectorAll("nav button")) b.setAttribute("aria-pressed", b.dataset.mode === mode);
  let progress = p.done + " / " + p.total + (mode === "review" ? " reviewed" : " answered");
  if (mode === "questions" && p.budget) {
    progress += " \\u00b7 project: " + p.project_answered + " of budget " + p.budget;
  }
  progress += " \\u00b7 " + state.annotator;
  $("progress").textContent = progress;
  $("bar").firstElementChild.style.width = (p.total ? 100 * p.done / p.total : 0) + "%";
  $("stop").hidden = !state.run;
  $("undo").disabled = !state.can_undo;
  $("skip-text").textContent = mode === "review" ? "leave as it is" : "skip (can't tell)";
  $("suggestion-label").textContent = mode === "review" ? "Model label" : "Model suggests";
  $("empty").hidden = !!task; $("item").hidden = !task; $("panel").hidden = !task;
  clearTimeout(pollTimer);
  if (!task) {
    $("empty").textContent = state.stopped ? "Labeling stopped. Every answer given is saved."
      : mode === "review" ? "Nothing left to review."
      : state.run ? "Waiting for the next questions: the model is learning from your answers."
      : "No open questions. Every answer is saved; run `metalabel run` to learn from them.";
    if (state.run && !state.stopped) pollTimer = setTimeout(load, POLL_MS);
    if (state.can_undo) { $("empty").append(document.createElement("br"), "Press U to undo the last answer."); }
    return;
  }
  const item = $("item");
  item.replaceChildren();
  if (task.kind === "image") {
    const img = document.createElement("img");
    img.alt = task.uri;
    img.src = task.image + "?token=" + encodeURIComponent(token);
    item.append(img);
  } else {
    const text = document.createElement("div");
    text.className = "text"; text.textContent = task.text;
    item.append(text);
  }
  const uri = document.createElement("div"); uri.id = "uri"; uri.textContent = task.uri; item.append(uri);
  $("why").textContent = task.why_text;
  $("current-box").hidden = task.current === null;
  $("current").textContent = task.current || "";
  const suggestion = $("suggestion");
  suggestion.replaceChildren();
  if (task.suggestion === null) {
    suggestion.textContent = task.why === "reference" ? "hidden for the reference sample" : "none";
  } else {
    const strong = document.createElement("strong"); strong.textContent = task.suggestion;
    suggestion.append(strong);
    if (task.confidence !== null) suggestion.append(" (" + Math.round(100 * task.confidence) + "% confident)");
  }
  $("accept").hidden = task.suggestion === null;
  $("accept").lastChild.textContent = mode === "review" ? "confirm" : "accept suggestion";
  const classes = $("classes");
  classes.replaceChildren();
  state.classes.forEach((name, i) => {
    const b = document.createElement("button");
    const k = document.createElement("kbd"); k.textContent = String(i + 1);
    b.append(k, name);
    b.dataset.label = name;
    if (name === task.suggestion) b.classList.add("suggested");
    if (task.earlier && task.earlier.label === name) b.classList.add("earlier");
    b.addEventListener("click", () => answer(name));
    classes.append(b);
  });
  if (task.earlier) say("Undone: your earlier answer was " + (task.earlier.label === null ? "skip" :
                        JSON.stringify(task.earlier.label)) + ". Answer again.", "");
}

function act(path, body) {
  if (busy) return;
  busy = true;
  say("saving\\u2026");
  api(path + "?mode=" + mode, body)
    .then((next) => {
      show(next);
      if (next.notice) say(next.notice, "bad");  // e.g. someone else answered it first: not simply saved
      else if (!next.task || !next.task.earlier) say("saved", "ok");
    })
    .catch((e) => say("not saved: " + e.message, "bad"))
    .finally(() => { busy = false; });
}
function answer(label) { if (state && state.task) act("/api/answer", {task: state.task.id, label: label}); }
function undo() { if (state && state.can_undo) act("/api/undo", {}); }

function chooseNumber(text) {
  const n = parseInt(text, 10);
  if (n >= 1 && n <= state.classes.length) answer(state.classes[n - 1]);
  else say(text + " is not a class number (1-" + state.classes.length + ")", "bad");
}

document.addEventListener("keydown", (e) => {
  if (!state || e.altKey || e.metaKey || (e.ctrlKey && e.key !== "z")) return;
  if (/^[0-9]$/.test(e.key) && state.task) {
    e.preventDefault();
    digits += e.key;
    clearTimeout(digitTimer);
    // with ten classes or more, "1" may begin "12": wait a moment for a second digit
    if (state.classes.length < 10 || digits.length === 2 || Number(digits + "0") > state.classes.length) {
      const text = digits; digits = ""; chooseNumber(text);
    } else {
      digitTimer = setTimeout(() => { const text = digits; digits = ""; chooseNumber(text); }, 600);
    }
  } else if (e.key === "Enter" && state.task && state.task.suggestion !== null) {
    e.preventDefault(); answer(state.task.suggestion);
  } else if ((e.key === "s" || e.key === "S") && state.task) {
    e.preventDefault(); answer(null);
  } else if (e.key === "u" || e.key === "U" || e.key === "Backspace" || (e.ctrlKey && e.key === "z")) {
    e.preventDefault(); undo();
  }
});
$("accept").addEventListener("click", () => state.task && answer(state.task.suggestion));
$("skip").addEventListener("click", () => answer(null));
$("undo").addEventListener("click", undo);
$("stop").addEventListener("click", () => {
  // a run may end before the reply arrives: the page says stopped either way
  api("/api/stop?mode=" + mode, {}).then(show).catch(() => show({...state, task: null, stopped: true}));
});
for (const b of document.querySelectorAll("nav button")) {
  b.addEventListener("click", () => {
    mode = b.dataset.mode;
    history.replaceState(null, "", "?token=" + encodeURIComponent(token) + (mode === "review" ? "&mode=review" : ""));
    say(""); load();
  });
}
load();
</script>
</body>
</html>
""".replace("POLL_MS", str(round(POLL_S * 1000)))
