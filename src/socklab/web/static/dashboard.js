// The live dashboard: one snapshot a second over server-sent events.
"use strict";

const HISTORY = 60;
const COLOURS = ["#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f"];
const history = {};

function $(id) { return document.getElementById(id); }

function ms(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  return seconds < 0.001 ? "≤" + (seconds * 1000).toFixed(2) + " ms" : "≤" + (seconds * 1000).toFixed(1) + " ms";
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.append(td);
  return td;
}

function render(snapshot) {
  const body = $("services").querySelector("tbody");
  body.replaceChildren();
  for (const s of snapshot.services) {
    const row = document.createElement("tr");
    row.dataset.service = s.service;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = s.service;
    row.append(th);
    const c = s.connections;
    cell(row, "http" in c ? String(c.http) : c.json + " / " + c.lab + " / " + c.line);
    cell(row, String(s.requests)).dataset.requests = String(s.requests);
    cell(row, s.requests_per_s.toFixed(1));
    const errors = Object.entries(s.errors).map(([code, n]) => code + " " + n).join(", ");
    cell(row, errors || "none");
    cell(row, ms(s.p50_s) + " / " + ms(s.p90_s) + " / " + ms(s.p99_s));
    body.append(row);
    const points = history[s.service] || (history[s.service] = []);
    points.push(s.requests_per_s);
    if (points.length > HISTORY) points.shift();
  }
  draw();
  const bank = $("bank");
  bank.replaceChildren();
  const rows = snapshot.bank ? [
    ["Total transactions", snapshot.bank.total],
    ["Successful", snapshot.bank.successful],
    ["Failed", snapshot.bank.failed],
    ["Success rate", (100 * snapshot.bank.success_rate).toFixed(2) + " %"],
    ["Error rate", (100 * snapshot.bank.error_rate).toFixed(2) + " %"],
  ] : [["Ledger", snapshot.has_bank ? "not answering" : "not served by this process"]];
  for (const [label, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    bank.append(dt, dd);
  }
  $("log").textContent = snapshot.log.join("\n");
}

function draw() {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const names = Object.keys(history);
  const top = Math.max(1, ...names.flatMap((n) => history[n]));
  const legend = [];
  names.forEach((name, i) => {
    const colour = COLOURS[i % COLOURS.length];
    ctx.strokeStyle = colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    history[name].forEach((value, x) => {
      const px = (x / (HISTORY - 1)) * (canvas.width - 10) + 5;
      const py = canvas.height - 5 - (value / top) * (canvas.height - 20);
      if (x === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
    });
    ctx.stroke();
    legend.push(name + " (" + colour + ")");
  });
  ctx.fillStyle = "#555";
  ctx.fillText("max " + top.toFixed(1) + "/s", 8, 12);
  $("legend").textContent = legend.join(" · ");
}

const events = new EventSource("/api/events");
events.onmessage = (event) => {
  $("status").textContent = "Live, updated every second";
  render(JSON.parse(event.data));
};
events.onerror = () => { $("status").textContent = "Disconnected; reconnecting…"; };
