// The ATM page and the playground. The PIN goes to the server once, at login, and is
// kept nowhere here; the session lives in an HttpOnly cookie, and every call carries the
// CSRF token the page was rendered with.
"use strict";

let csrf = document.querySelector('meta[name="csrf-token"]').content;
const MAX_ATTEMPTS = 5;

function $(id) { return document.getElementById(id); }

function note(text, kind) {
  const item = document.createElement("li");
  item.textContent = text;
  if (kind) item.className = kind;
  $("activity").prepend(item);
  while ($("activity").children.length > 30) $("activity").lastChild.remove();
}

async function call(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  const reply = await response.json();
  return reply;
}

function newKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

function showStats(stats) {
  if (!stats) return;
  const list = $("stats");
  list.replaceChildren();
  const rows = [
    ["Total transactions", stats.total],
    ["Successful", stats.successful],
    ["Failed", stats.failed],
    ["Success rate", (100 * stats.success_rate).toFixed(2) + " %"],
    ["Error rate", (100 * stats.error_rate).toFixed(2) + " %"],
  ];
  for (const [label, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    dd.dataset.stat = label;
    list.append(dt, dd);
  }
}

async function refresh() {
  const balance = await call("/api/bank/balance", {});
  if (!balance.ok) { note(balance.error.message, "error"); return; }
  $("balance").textContent = balance.balance;
  showStats(balance.stats);
  const statement = await call("/api/bank/statement", { limit: 10 });
  if (!statement.ok) return;
  const body = $("statement").querySelector("tbody");
  body.replaceChildren();
  for (const p of statement.postings) {
    const row = document.createElement("tr");
    for (const value of [p.posting, p.op, p.amount, p.balance_after, p.counterparty ?? ""]) {
      const cell = document.createElement("td");
      cell.textContent = String(value);
      row.append(cell);
    }
    body.append(row);
  }
}

// A money action: one key, made here, sent again on every retry after a network failure.
async function moneyAction(op, fields) {
  const key = newKey();
  const what = op + " " + fields.amount + (fields.to ? " to " + fields.to : "");
  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    let reply;
    try {
      reply = await call("/api/bank/" + op, { ...fields, key });
    } catch (error) {
      if (attempt === MAX_ATTEMPTS) {
        note(what + ": no reply after " + attempt + " attempts; try again later (key " + key + ")", "error");
        return;
      }
      note("Network failure: no reply to " + what + ". Retrying with the same key " + key +
           " (attempt " + (attempt + 1) + ")", "retry");
      await sleep(200 * attempt);
      continue;
    }
    if (!reply.ok) {
      note(what + " refused: " + reply.error.message + " (" + reply.error.code + ")", "error");
      if (reply.error.code === "transient_failure" && attempt < MAX_ATTEMPTS) {
        note("Retrying " + what + " with the same key " + key, "retry");
        continue;
      }
      await refresh();
      return;
    }
    $("balance").textContent = reply.balance;
    showStats(reply.stats);
    if (reply.replayed) {
      note(what + ": the bank had already applied it (replayed, posting " + reply.posting +
           "); the money moved once. Balance " + reply.balance, "ok");
    } else {
      note(what + ": done (posting " + reply.posting + "). Balance " + reply.balance, "ok");
    }
    await refresh();
    return;
  }
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const account = Number($("login-account").value.trim());
  const pinField = $("login-pin");
  const pin = pinField.value;
  pinField.value = "";  // the PIN is not kept on the page
  let reply;
  try {
    reply = await call("/api/bank/login", { account, pin });
  } catch (error) {
    note("Login: no reply from the server", "error");
    return;
  }
  if (!reply.ok) {
    note("Login refused: " + reply.error.message, "error");
    return;
  }
  csrf = reply.csrf;
  $("account-name").textContent = reply.name;
  $("account-id").textContent = String(reply.account);
  $("balance").textContent = reply.balance;
  $("login-form").hidden = true;
  $("account").hidden = false;
  note("Logged in to account " + reply.account, "ok");
  await refresh();
  $("amount").focus();
});

let moneyOp = "deposit";
for (const button of $("money-form").querySelectorAll("button")) {
  button.addEventListener("click", () => { moneyOp = button.dataset.op; });
}
$("money-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const op = event.submitter ? event.submitter.dataset.op : moneyOp;
  await moneyAction(op, { amount: $("amount").value.trim() });
});
$("transfer-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  await moneyAction("transfer", {
    to: Number($("transfer-to").value.trim()),
    amount: $("transfer-amount").value.trim(),
  });
});
$("refresh").addEventListener("click", refresh);
$("logout").addEventListener("click", async () => {
  await call("/api/bank/logout", {});
  $("account").hidden = true;
  $("login-form").hidden = false;
  note("Logged out", "ok");
  $("login-account").focus();
});

// The playground: the same services, through their sessions.
for (const form of document.querySelectorAll("#playground form")) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const service = form.dataset.service;
    const body = {};
    for (const input of form.querySelectorAll("input")) {
      const value = input.value.trim();
      body[input.name] = input.inputMode === "numeric" && /^-?\d+$/.test(value) ? Number(value) : value;
    }
    let reply;
    try {
      reply = await call("/api/play/" + service, body);
    } catch (error) {
      $("play-result").textContent = service + ": no reply from the server";
      return;
    }
    if (!reply.ok) {
      $("play-result").textContent = service + ": " + reply.error.message;
      return;
    }
    delete reply.ok;
    $("play-result").textContent = service + ": " + JSON.stringify(reply);
  });
}
