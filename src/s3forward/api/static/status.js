// The s3forward status page: polls status.json and renders it. No dependencies, no build step.
// Every value from the server is inserted as text (never as HTML): keys and error messages are
// data, not markup.
"use strict";
(function () {
  const POLL_MS = 5000;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "cls") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const child of children || []) node.appendChild(child);
    return node;
  }

  const int = (n) => Math.round(n).toLocaleString("en-US");
  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = n, i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
  }
  function dur(s) {
    s = Math.max(0, Math.floor(s));
    if (s < 120) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }
  const ago = (t, now) => (t ? dur(now - t) + " ago" : "never");
  const rate = (r) => (r >= 10 ? int(r) : r.toFixed(r >= 1 ? 1 : 2));

  function setNumber(node, value, text) {
    node.dataset.value = String(value);
    node.textContent = text === undefined ? int(value) : text;
  }

  function renderHeader(s) {
    const ready = $("ready");
    ready.className = "pill " + (s.ready ? "ready" : "notready");
    ready.textContent = s.ready ? "Ready" : "Not ready";
    $("reasons").textContent = s.ready ? "" : s.ready_reasons.join("; ");
    const from = s.source === "server" ? "up " + dur(s.uptime_seconds) : "read from the spool";
    $("meta").textContent = "v" + s.version + " · " + from + " · updated " +
      // UTC, 24-hour, like every object key and log line (never the browser's local time).
      new Date(s.generated_at * 1000).toISOString().slice(11, 19) + " UTC";
  }

  function renderTiles(s) {
    const sum = (rows, key) => rows.reduce((a, r) => a + (r[key] || 0), 0);
    const pts = s.history.points;
    const last = pts.length ? pts[pts.length - 1] : null;
    $("t-rate").textContent = last ? rate(last.events_per_second) : "–";
    setNumber($("t-events"), sum(s.inputs, "events_received"));
    setNumber($("t-delivered"), sum(s.connections, "files_delivered"));
    const oldest = Math.max(0, ...s.connections.map((c) => c.oldest_undelivered_age_seconds));
    $("t-oldest").textContent = oldest > 0 ? dur(oldest) : "none";
    setNumber($("t-waiting"), s.spool.pending_files);
    setNumber($("t-open"), s.spool.open_windows);
    const spool = $("t-spool");
    spool.textContent = bytes(s.spool.bytes);
    spool.appendChild(el("small", { text: " of " + bytes(s.spool.max_bytes) }));
  }

  function fact(label, value, metric) {
    const dd = el("dd", { text: value });
    if (metric) dd.dataset.metric = metric;
    return el("div", {}, [el("dt", { text: label }), dd]);
  }

  function errorsText(byCode) {
    const parts = Object.entries(byCode || {}).map(([code, n]) => code + " ×" + n);
    return parts.length ? parts.join(", ") : "0";
  }

  function renderConnections(s) {
    const now = s.generated_at;
    const cards = s.connections.map((c) => {
      const facts = [
        fact("Files waiting", int(c.pending_files), "pending_files"),
        fact("Waiting bytes", bytes(c.pending_bytes)),
        fact("Open windows", int(c.open_windows), "open_windows"),
        fact("Oldest undelivered", c.oldest_undelivered_age_seconds > 0 ? dur(c.oldest_undelivered_age_seconds) : "none"),
      ];
      if (c.files_delivered !== undefined) {
        facts.push(
          fact("Files delivered", int(c.files_delivered), "files_delivered"),
          fact("Bytes delivered", bytes(c.bytes_delivered)),
          fact("Last success", ago(c.last_success_at, now)),
          fact("Retried", errorsText(c.uploads_retried)),
          fact("Failed", errorsText(c.uploads_failed)),
        );
      }
      const state = el("span", { cls: "pill " + c.state, text: c.state });
      const card = el("article", { cls: "card conn " + c.state, "data-connection": c.name }, [
        el("div", { cls: "head" }, [el("span", { cls: "name", text: c.name }), state]),
        el("div", { cls: "dest", text: c.destination.url + (c.destination.region ? " · " + c.destination.region : "") }),
        el("div", { cls: "message", text: c.message }),
        el("dl", { cls: "facts" }, facts),
      ]);
      return card;
    });
    for (const gone of s.spool.unconfigured || []) {
      cards.push(el("article", { cls: "card conn unknown", "data-connection": gone.name }, [
        el("div", { cls: "head" }, [el("span", { cls: "name", text: gone.name }), el("span", { cls: "pill unknown", text: "not configured" })]),
        el("div", { cls: "message", text: "No longer in the config: its data is kept, not forwarded, until a connection of this name is configured again or `s3forward spool discard --connection " + gone.name + "` lets it go." }),
        el("dl", { cls: "facts" }, [
          fact("Files waiting", int(gone.pending_files)),
          fact("Waiting bytes", bytes(gone.pending_bytes)),
          fact("Open windows", int(gone.open_windows)),
        ]),
      ]));
    }
    $("connections").replaceChildren(...cards);
  }

  function chart(id, points, key, format) {
    const svg = $(id);
    const card = svg.parentNode;
    const values = points.map((p) => p[key]);
    $(id + "-now").textContent = values.length ? format(values[values.length - 1]) : "–";
    const axis = card.querySelector(".axis .from");
    const kids = [];
    if (points.length < 2) {
      const t = document.createElementNS(SVG, "line");
      t.setAttribute("class", "base");
      t.setAttribute("x1", "0"); t.setAttribute("x2", "300");
      t.setAttribute("y1", "89"); t.setAttribute("y2", "89");
      kids.push(t);
      axis.textContent = "collecting…";
      svg.replaceChildren(...kids);
      return;
    }
    const t0 = points[0].t, t1 = points[points.length - 1].t;
    const span = Math.max(t1 - t0, 1);
    const top = Math.max(...values) * 1.15 || 1;
    const xy = points.map((p) => [((p.t - t0) / span) * 300, 88 - (p[key] / top) * 82]);
    const line = xy.map(([x, y]) => x.toFixed(1) + "," + y.toFixed(1)).join(" ");
    const area = document.createElementNS(SVG, "path");
    area.setAttribute("class", "area");
    area.setAttribute("d", "M0,89 L" + line.replaceAll(" ", " L") + " L300,89 Z");
    const base = document.createElementNS(SVG, "line");
    base.setAttribute("class", "base");
    base.setAttribute("x1", "0"); base.setAttribute("x2", "300");
    base.setAttribute("y1", "89"); base.setAttribute("y2", "89");
    const poly = document.createElementNS(SVG, "polyline");
    poly.setAttribute("class", "line");
    poly.setAttribute("points", line);
    svg.replaceChildren(area, base, poly);
    axis.textContent = dur(span) + " ago · peak " + format(Math.max(...values));
  }

  function rows(tbody, items, cells, emptyText, span) {
    const trs = items.map((item) => el("tr", {}, cells(item)));
    if (!trs.length) trs.push(el("tr", {}, [el("td", { cls: "none", colspan: String(span), text: emptyText })]));
    $(tbody).replaceChildren(...trs);
  }
  const td = (text, cls) => el("td", cls ? { cls: cls, text: text } : { text: text });

  function renderTables(s) {
    const now = s.generated_at;
    rows("inputs", s.inputs, (i) => {
      const rejected = Object.entries(i.rejected).map(([r, n]) => r + " ×" + n).join(", ");
      const b = td(int(i.batches_received), "num"); b.dataset.metric = "batches_received";
      const e = td(int(i.events_received), "num"); e.dataset.metric = "events_received";
      const d = td(int(i.batches_deduplicated), "num"); d.dataset.metric = "batches_deduplicated";
      const tr = [td(i.name === "-" ? "(unauthenticated)" : i.name), b, e, d, td(rejected || "none")];
      return tr;
    }, s.source === "server" ? "no inputs" : "counters are only known while the server runs", 5);
    rows("waiting", s.waiting_files, (f) => [
      td(f.key, "key"), td(f.connection), td(bytes(f.stored_bytes), "num"),
      td(int(f.attempts), "num"), td(f.last_error || "", f.last_error ? "err" : ""),
    ], "nothing waiting: every sealed file is delivered", 5);
    rows("recent", s.recent_files, (f) => [
      td(f.key, "key"), td(f.connection, "hide-narrow"), td(int(f.events), "num"),
      td(bytes(f.stored_bytes), "num"), td(ago(f.delivered_at, now), "num"),
    ], "no file written yet", 5);
  }

  // Cluster mode (issue 9): built on first use, so the single-node page is unchanged.
  function renderCluster(s) {
    const c = s.cluster;
    let box = $("cluster");
    if (!c) { if (box) box.remove(); return; }
    if (!box) {
      box = el("section", { id: "cluster" }, [
        el("h2", { text: "Cluster" }),
        el("dl", { cls: "facts card", id: "cluster-facts" }),
        el("div", { cls: "scroll" }, [el("table", {}, [
          el("thead", {}, [el("tr", {}, ["Partition", "Owner", "State", "Lag", "Open windows", "Oldest undelivered"]
            .map((h, i) => el("th", i >= 3 ? { cls: "num", text: h } : { text: h })))]),
          el("tbody", { id: "cluster-partitions" }),
        ])]),
      ]);
      $("connections").parentNode.insertBefore(box, $("connections").previousElementSibling);
    }
    const now = s.generated_at;
    if (c.partitions === undefined) {
      $("cluster-facts").replaceChildren(fact("Cluster", c.error || "no reading yet"));
      return;
    }
    const workers = c.workers.map((w) => w.id + " (" + w.partitions_owned.length + (w.draining ? ", draining" : "") + ")");
    $("cluster-facts").replaceChildren(
      fact("Workers", workers.join(", ") || "none"),
      fact("Partitions unowned", c.unowned_partitions.length ? c.unowned_partitions.join(", ") : "none", "unowned_partitions"),
      fact("Lag (messages)", int(c.lag_messages), "lag_messages"),
      fact("Oldest undelivered", c.oldest_undelivered_age_seconds > 0 ? dur(c.oldest_undelivered_age_seconds) : "none"),
      fact("Lease moves", int(c.lease_moves), "lease_moves"),
      fact("Read", c.error ? c.error : ago(c.read_at, now)),
    );
    rows("cluster-partitions", c.partition_rows, (r) => [
      td(String(r.partition)), td(r.owner || "none", r.owner ? "" : "err"), td(r.state),
      td(int(r.lag), "num"), td(int(r.open_windows), "num"),
      td(r.oldest_undelivered_at ? dur(now - r.oldest_undelivered_at) : "none", "num"),
    ], "no partitions", 6);
  }

  function render(s) {
    renderHeader(s);
    renderTiles(s);
    renderCluster(s);
    renderConnections(s);
    const pts = s.history.points;
    chart("c-events", pts, "events_per_second", rate);
    chart("c-files", pts, "files_delivered", int);
    chart("c-age", pts, "oldest_undelivered_age_seconds", dur);
    renderTables(s);
    document.body.dataset.loaded = "true";
  }

  async function poll() {
    const banner = $("offline");
    try {
      const response = await fetch("status.json", { cache: "no-store", credentials: "same-origin" });
      if (!response.ok) throw new Error("status.json answered HTTP " + response.status);
      render(await response.json());
      banner.className = "";
    } catch (err) {
      banner.textContent = "Cannot reach s3forward: " + err.message + " (retrying)";
      banner.className = "show";
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
