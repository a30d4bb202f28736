/* ops-agent dashboard: listens to /dashboard/events (Server-Sent Events) and draws what it hears.
 *
 * Plain JavaScript, no dependencies. Every piece of data goes into the page as text (textContent or
 * text nodes), never as HTML. The state the tests read lives in data attributes:
 *   #live[data-state]      connecting | live | stale | reconnecting | offline
 *   #live[data-snapshots]  snapshots received since the page loaded
 *   canvas[data-points]    points plotted by the chart's last drawing
 */
"use strict";

(() => {
  const HISTORY = 120; // points kept per chart (one per system sample)
  const STALE_AFTER_MS = 5000; // at least; three event intervals when those are longer
  const RETRY_CLOSED_MS = 15000; // a stream the server refused (401, 503) is retried this much later

  const $ = (id) => document.getElementById(id);

  // -- building DOM safely ---------------------------------------------------------------------------

  /** An element with a class, optional text, and children (strings become text nodes). */
  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function badge(text, tone) {
    return el("span", `badge ${tone || ""}`.trim(), String(text));
  }

  // -- formatting ------------------------------------------------------------------------------------

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const dash = "–";

  function pct(v, digits = 1) {
    return isNum(v) ? `${v.toFixed(digits)} %` : dash;
  }

  function bytes(n) {
    if (!isNum(n)) return dash;
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    const shown = n.toFixed(i === 0 || Math.abs(n) >= 100 ? 0 : 1).replace(/\.0$/, "");
    return `${shown} ${units[i]}`;
  }

  const rate = (n) => (isNum(n) ? `${bytes(n)}/s` : dash);

  function duration(seconds) {
    if (!isNum(seconds)) return dash;
    const s = Math.max(0, Math.round(seconds));
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d > 0) return `${d} d ${h} h`;
    if (h > 0) return `${h} h ${m} min`;
    if (m > 0) return `${m} min ${s % 60} s`;
    return `${s} s`;
  }

  function ago(iso) {
    const at = Date.parse(iso);
    if (!Number.isFinite(at)) return dash;
    const seconds = (Date.now() - at) / 1000;
    return seconds < 1.5 ? "just now" : `${duration(seconds)} ago`;
  }

  function clock(iso) {
    const at = new Date(iso);
    if (Number.isNaN(at.getTime())) return dash;
    const today = new Date().toDateString() === at.toDateString();
    return today
      ? at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
      : at.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }

  const number = (v, digits = 0) => (isNum(v) ? v.toLocaleString([], { maximumFractionDigits: digits }) : dash);
  const usd = (v) => (isNum(v) ? `$${v.toFixed(2)}` : dash);

  // -- charts ----------------------------------------------------------------------------------------

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  /** A small line chart on a <canvas>: fixed or automatic scale, newest point on the right. */
  class LineChart {
    constructor(canvas, { series, max = null, format }) {
      this.canvas = canvas;
      this.series = series; // [{ color: "--accent", fill: true }]
      this.fixedMax = max;
      this.format = format;
      this.data = series.map(() => []);
      new ResizeObserver(() => this.draw()).observe(canvas);
    }

    push(...values) {
      values.forEach((value, i) => {
        const points = this.data[i];
        points.push(isNum(value) ? value : null);
        if (points.length > HISTORY) points.shift();
      });
      this.draw();
    }

    scale() {
      if (this.fixedMax !== null) return this.fixedMax;
      const peak = Math.max(0, ...this.data.flat().filter(isNum));
      return niceCeiling(Math.max(peak, 1024));
    }

    draw() {
      const { canvas } = this;
      const ratio = window.devicePixelRatio || 1;
      const width = canvas.clientWidth;
      const height = canvas.clientHeight;
      if (!width || !height) return;
      if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
        canvas.width = Math.round(width * ratio);
        canvas.height = Math.round(height * ratio);
      }
      const ctx = canvas.getContext("2d");
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.clearRect(0, 0, width, height);

      const max = this.scale();
      const font = `11px ${getComputedStyle(document.body).fontFamily}`;
      ctx.font = font;
      const labels = [max, max / 2, 0].map((v) => this.format(v));
      const left = Math.ceil(Math.max(...labels.map((t) => ctx.measureText(t).width))) + 8;
      const top = 6;
      const bottom = height - 6;
      const right = width - 2;
      const plotHeight = bottom - top;
      const y = (v) => bottom - (Math.min(v, max) / max) * plotHeight;
      const x = (i) => left + (i / (HISTORY - 1)) * (right - left);

      // Grid and scale.
      ctx.strokeStyle = cssVar("--grid");
      ctx.fillStyle = cssVar("--muted");
      ctx.lineWidth = 1;
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      [max, max / 2, 0].forEach((v, i) => {
        const gy = Math.round(y(v)) + 0.5;
        ctx.beginPath();
        ctx.moveTo(left, gy);
        ctx.lineTo(right, gy);
        ctx.stroke();
        ctx.fillText(labels[i], left - 6, Math.min(Math.max(gy, top + 5), bottom - 5));
      });

      // Lines, newest at the right edge.
      let plotted = 0;
      this.data.forEach((points, s) => {
        const offset = HISTORY - points.length;
        const color = cssVar(this.series[s].color);
        const segments = [];
        let current = [];
        points.forEach((v, i) => {
          if (v === null) {
            if (current.length) segments.push(current);
            current = [];
          } else {
            current.push([x(offset + i), y(v)]);
          }
        });
        if (current.length) segments.push(current);
        plotted = Math.max(plotted, points.filter((v) => v !== null).length);

        for (const segment of segments) {
          if (this.series[s].fill && segment.length > 1) {
            ctx.beginPath();
            ctx.moveTo(segment[0][0], bottom);
            segment.forEach(([px, py]) => ctx.lineTo(px, py));
            ctx.lineTo(segment[segment.length - 1][0], bottom);
            ctx.closePath();
            ctx.fillStyle = cssVar("--accent-fill");
            ctx.fill();
          }
          ctx.beginPath();
          segment.forEach(([px, py], i) => (i ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
          ctx.strokeStyle = color;
          ctx.lineWidth = 2;
          ctx.lineJoin = "round";
          ctx.stroke();
          const [lx, ly] = segment[segment.length - 1];
          ctx.beginPath();
          ctx.arc(lx, ly, 2.5, 0, 2 * Math.PI);
          ctx.fillStyle = color;
          ctx.fill();
        }
      });
      canvas.dataset.points = String(plotted);
    }
  }

  function niceCeiling(v) {
    const power = 1024 ** Math.floor(Math.log(v) / Math.log(1024));
    const scaled = v / power;
    const step = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024].find((s) => s >= scaled) || 1024;
    return step * power;
  }

  const shortRate = (v) => (v === 0 ? "0" : `${bytes(v)}/s`);

  const charts = {
    cpu: new LineChart($("chart-cpu"), { series: [{ color: "--accent", fill: true }], max: 100, format: (v) => `${v}%` }),
    mem: new LineChart($("chart-mem"), { series: [{ color: "--accent", fill: true }], max: 100, format: (v) => `${v}%` }),
    net: new LineChart($("chart-net"), {
      series: [{ color: "--accent", fill: true }, { color: "--accent-b" }],
      format: shortRate,
    }),
  };

  // -- sections --------------------------------------------------------------------------------------

  let lastSampledAt = null;

  function renderSystem(system) {
    if (!system) return;
    if (system.sampled_at !== lastSampledAt) {
      lastSampledAt = system.sampled_at;
      charts.cpu.push(system.cpu_percent);
      charts.mem.push(system.memory_percent);
      charts.net.push(system.net_recv_bytes_per_s, system.net_sent_bytes_per_s);
    }
    $("cpu-now").textContent = pct(system.cpu_percent);
    $("mem-now").textContent = pct(system.memory_percent);
    $("mem-detail").textContent =
      `${bytes(system.memory_used_bytes)} of ${bytes(system.memory_total_bytes)} used · swap ${pct(system.swap_percent)}`;
    $("net-detail").textContent =
      `in ${rate(system.net_recv_bytes_per_s)} · out ${rate(system.net_sent_bytes_per_s)}`;

    const cores = (system.cpu_per_core || []).map((v, i) => {
      const fill = el("div", "core-fill");
      fill.style.height = `${Math.max(0, Math.min(100, v))}%`;
      const core = el("div", "core", fill);
      core.title = `core ${i}: ${pct(v)}`;
      return core;
    });
    $("cores").replaceChildren(...cores);

    const load = (system.load_average || []).map((v) => (isNum(v) ? v.toFixed(2) : dash)).join(" · ");
    const facts = [
      ["Load (1 · 5 · 15 min)", load || dash],
      ["Cores", number(system.cpu_count)],
      ["Processes", number(system.process_count)],
      ["Disk read", rate(system.disk_read_bytes_per_s)],
      ["Disk write", rate(system.disk_write_bytes_per_s)],
      ["Uptime", duration(system.uptime_s)],
    ];
    $("host-facts").replaceChildren(...facts.flatMap(([term, value]) => [el("dt", null, term), el("dd", null, value)]));

    $("disks").replaceChildren(
      ...(system.disks || []).map((disk) =>
        barRow(disk.mount, `${pct(disk.percent, 0)} · ${bytes(disk.used_bytes)} of ${bytes(disk.total_bytes)}`, disk.percent),
      ),
    );
  }

  /** A labelled bar: `percent` of 100, coloured when it runs high. */
  function barRow(label, value, percent) {
    const fill = el("div", "bar-fill");
    const p = isNum(percent) ? Math.max(0, Math.min(100, percent)) : 0;
    fill.style.width = `${p}%`;
    if (p >= 90) fill.classList.add("bad");
    else if (p >= 75) fill.classList.add("warn");
    const name = el("span", "bar-label", label);
    name.title = label;
    return el("div", "bar-row", name, el("span", "bar-value", value), el("div", "bar", fill));
  }

  const SERVICE_TONE = { up: "ok", down: "bad", pending: "" };

  function renderServices(services) {
    const rows = services.map((s) => {
      const name = el("td", null, el("strong", null, s.name), s.target ? el("span", "target", s.target) : null);
      const status = el("td", null, badge(s.status, SERVICE_TONE[s.status]), s.error ? el("span", "error", s.error) : null);
      const failures = el("td", "num", number(s.consecutive_failures));
      if (s.consecutive_failures > 0) failures.append(" ", badge("failing", "bad"));
      const checked = el("td", null, s.checked_at ? ago(s.checked_at) : `every ${duration(s.interval_s)}`);
      return el(
        "tr",
        null,
        name,
        status,
        el("td", "num", isNum(s.latency_ms) ? `${number(s.latency_ms, 1)} ms` : dash),
        el("td", "num", pct(s.uptime_percent, 2)),
        failures,
        checked,
      );
    });
    $("services").replaceChildren(...rows);
    $("services").closest(".table-wrap").hidden = services.length === 0;
    $("services-empty").hidden = services.length > 0;
  }

  const OUTCOME_TONE = { ready: "ok", done: "ok", failed: "bad", error: "bad", pending: "warn", building: "warn", canceled: "" };

  function renderDeployments(deployments) {
    const rows = deployments.map((d) => {
      const when = el("td", null, ago(d.requested_at));
      when.title = clock(d.requested_at);
      let project = d.project;
      if (typeof d.url === "string" && /^https:\/\//.test(d.url)) {
        project = el("a", null, d.project);
        project.href = d.url;
        project.rel = "noopener noreferrer";
        project.target = "_blank";
      }
      const outcome = el("td", null, badge(d.outcome, OUTCOME_TONE[d.outcome]), d.error ? el("span", "error", d.error) : null);
      return el(
        "tr",
        null,
        when,
        el("td", null, d.action),
        el("td", null, project, d.branch ? el("span", "target", d.branch) : null),
        el("td", null, d.environment),
        outcome,
        el("td", null, d.requested_by),
      );
    });
    $("deployments").replaceChildren(...rows);
    $("deployments").closest(".table-wrap").hidden = deployments.length === 0;
    $("deployments-empty").hidden = deployments.length > 0;
  }

  const LEVEL_TONE = { sandbox_only: "", staging_access: "info", prod_low_risk: "warn", prod_full_access: "ok" };

  function renderGovernance(g) {
    const box = $("governance");
    if (!g) {
      box.replaceChildren(el("p", "empty", "Governance status unavailable."));
      return;
    }
    if (g.mode === "degraded") {
      box.replaceChildren(
        el("div", "score", badge("degraded", "bad"), el("span", null, g.fail_open ? "running unconstrained (fail_open)" : "read-only actions only")),
        el("p", "sub", g.reason || ""),
      );
      return;
    }
    const levels = Object.entries(g.levels || {});
    const next = levels.find(([, floor]) => floor > g.reputation_score);
    const probation = g.probation || {};
    const onProbation = isNum(probation.required) && probation.successes < probation.required;
    const budget = g.budget || {};
    const bars = [
      ["Tokens, this hour", budget.hourly_tokens, number],
      ["Tokens, today", budget.daily_tokens, number],
      ["USD, this hour", budget.hourly_usd, usd],
      ["USD, today", budget.daily_usd, usd],
    ]
      .filter(([, item]) => item)
      .map(([label, item, show]) =>
        barRow(label, `${show(item.used)} of ${show(item.limit)}`, item.limit > 0 ? (100 * item.used) / item.limit : 100),
      );
    box.replaceChildren(
      el(
        "div",
        "score",
        el("span", "score-value", number(g.reputation_score)),
        el("span", "score-of", "reputation"),
        badge(g.permission_level, LEVEL_TONE[g.permission_level]),
      ),
      el(
        "p",
        "sub",
        onProbation
          ? `Probation: ${probation.successes} of ${probation.required} successful tasks`
          : next
            ? `Next level ${next[0]} at ${next[1]}`
            : "Highest level reached",
      ),
      el("h3", null, "Budget"),
      el("div", "bars", ...bars),
    );
  }

  const SEVERITY_TONE = { critical: "bad", high: "bad", medium: "warn", low: "info" };

  function renderAlerts(alerts) {
    const items = alerts.map((a) => {
      const since = a.fired_at || a.started_at;
      const when = el("span", "alert-meta", a.state === "pending" ? `pending since ${ago(since)}` : `firing since ${ago(since)}`);
      when.title = clock(since);
      const notes = [
        a.acknowledged_by ? `acknowledged by ${a.acknowledged_by}` : null,
        a.remediation ? `remediation: ${a.remediation}` : null,
      ].filter(Boolean);
      return el(
        "li",
        `alert-item ${SEVERITY_TONE[a.severity] || ""}`.trim(),
        badge(a.severity || "alert", SEVERITY_TONE[a.severity]),
        a.state === "pending" ? badge("pending") : null,
        el("strong", null, String(a.rule || "alert")),
        el("span", "alert-summary", String(a.summary || "")),
        when,
        notes.length ? el("span", "alert-meta", notes.join(" · ")) : null,
      );
    });
    $("alerts").replaceChildren(...items);
    $("alerts-note").textContent = alerts.length ? "" : "None right now.";
    $("alerts-note").hidden = alerts.length > 0;
  }

  const KIND_TONE = { alert: "warn", remediation: "info", diagnosis: "" };

  function renderTimeline(entries) {
    const items = entries.map((e) => {
      const at = el("span", "timeline-time", clock(e.at));
      at.title = new Date(e.at).toLocaleString();
      return el("li", null, at, badge(e.kind, KIND_TONE[e.kind]), el("span", "timeline-text", String(e.text)));
    });
    $("timeline").replaceChildren(...items);
    $("timeline-empty").hidden = entries.length > 0;
  }

  // -- the stream ------------------------------------------------------------------------------------

  const live = $("live");
  let received = 0;
  let lastEventAt = 0;
  let intervalMs = 1000;

  function setState(state, label) {
    live.dataset.state = state;
    live.querySelector(".live-label").textContent = label || state;
  }

  function onSnapshot(event) {
    let snapshot;
    try {
      snapshot = JSON.parse(event.data);
    } catch (error) {
      console.warn("dashboard: unreadable snapshot", error);
      return;
    }
    received += 1;
    lastEventAt = Date.now();
    intervalMs = (snapshot.interval_s || 1) * 1000;
    live.dataset.snapshots = String(received);
    $("snapshot-count").textContent = number(received);
    setState("live");

    $("agent").textContent = `agent ${snapshot.agent}`;
    renderSystem(snapshot.system);
    renderServices(snapshot.services || []);
    renderDeployments(snapshot.deployments || []);
    renderGovernance(snapshot.governance);
    renderAlerts(snapshot.alerts || []);
    renderTimeline(snapshot.timeline || []);
    $("updated").textContent = `Updated ${clock(snapshot.generated_at)}`;
    $("problems").textContent = Object.values(snapshot.errors || {}).join(" · ");
  }

  let source = null;

  function connect() {
    source = new EventSource("dashboard/events");
    source.addEventListener("snapshot", onSnapshot);
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        // The server refused the stream (a token that changed, too many streams): try again later.
        setState("offline", "offline");
        setTimeout(connect, RETRY_CLOSED_MS);
      } else {
        setState(received ? "reconnecting" : "connecting", received ? "reconnecting" : "connecting");
      }
    });
  }

  setInterval(() => {
    if (live.dataset.state === "live" && Date.now() - lastEventAt > Math.max(STALE_AFTER_MS, 3 * intervalMs)) {
      setState("stale", "stale");
    }
  }, 1000);

  connect();
})();
