/* The station's pages: overview, characteristic, alarms, devices, login. Data comes from /api (the
   agent's in-memory view) and then live from /api/stream (server-sent events; the browser reconnects
   by itself and sends Last-Event-ID, so nothing is missed and nothing reloads). */
"use strict";
(function () {
  var body = document.body, PAGE = body.getAttribute("data-page"), CH = body.getAttribute("data-ch");
  var main = document.getElementById("main"), tip = document.getElementById("tip");
  var session = { user: null, csrf: null, causes: [], actions: [] };
  // For tests and curious engineers: what the page has received.
  var state = window.STATION = { events: 0, lastEventId: null, live: false, page: PAGE };

  function h(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      if (attrs[k] === null || attrs[k] === undefined) continue;
      if (k === "text") e.textContent = attrs[k];
      else if (k.indexOf("on") === 0) e.addEventListener(k.substr(2), attrs[k]);
      else e.setAttribute(k, attrs[k]);
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return e;
  }
  function api(path) {
    return fetch(path, { credentials: "same-origin" }).then(function (r) {
      if (r.status === 401) { location.href = "/login"; throw new Error("login"); }
      if (!r.ok) throw new Error(r.status);
      return r.json();
    });
  }
  function post(path, data) {
    return fetch(path, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": session.csrf || "" },
      body: JSON.stringify(data)
    }).then(function (r) {
      state.lastWrite = { path: path, status: r.status };
      return r.json().catch(function () { return {}; }).then(function (j) { return { ok: r.ok, status: r.status, body: j }; });
    });
  }
  var fmt = Charts.fmt;
  function ruleText(r) {
    if (r.text && typeof r.text === "object") { var t = r.text[LANG === "zh-CN" ? "zh" : "en"] || r.text.en; if (t) return r.rule + ": " + t; }
    return r.rule + ": " + T(r.rule);
  }
  function translate() {
    document.querySelectorAll("[data-t]").forEach(function (e) { e.textContent = T(e.getAttribute("data-t")); });
  }
  function setLive(on) {
    state.live = on;
    var l = document.getElementById("live");
    l.className = "live " + (on ? "on" : "off");
    l.textContent = T(on ? "live.on" : "live.off");
  }
  function stream(ch, handlers) {
    var es = new EventSource("/api/stream" + (ch ? "?ch=" + encodeURIComponent(ch) : ""));
    es.onopen = function () { setLive(true); };
    es.onerror = function () { setLive(false); };
    ["point", "limits", "capability", "active", "devices", "reset"].forEach(function (k) {
      es.addEventListener(k, function (e) {
        state.events++;
        if (e.lastEventId) state.lastEventId = e.lastEventId;
        if (handlers[k]) handlers[k](JSON.parse(e.data));
      });
    });
    state.source = es;
    return es;
  }
  function showTip(p, e) {
    if (!p) { tip.hidden = true; return; }
    tip.textContent = "";
    var rows = [[T("value"), fmt(p.value) + (p.unit ? " " + p.unit : "")], [T("time"), (p.ts || "").replace("T", " ").substr(0, 23)]];
    if (p.subgroup) rows.push([T("subgroup"), "#" + p.subgroup + (p.n ? " (n=" + p.n + ")" : "")]);
    else if (p.n > 1) rows.push(["n", p.n]);
    rows.push(["seq", p.seq]);
    if (p.phase) rows.push([T("state"), T("phase." + p.phase)]);
    if (p.context) for (var k in p.context) rows.push([k, p.context[k]]);
    (p.rules || []).forEach(function (r) { rows.push([T("rule"), r + ": " + T(r)]); });
    rows.forEach(function (r) { tip.appendChild(h("div", null, h("b", { text: r[0] + " " }), String(r[1]))); });
    tip.hidden = false;
    var x = (e && e.clientX) || 0, y = (e && e.clientY) || 0;
    tip.style.left = Math.min(x + 12, window.innerWidth - 260) + "px";
    tip.style.top = (y + 12) + "px";
  }

  /* ---------- header ---------- */
  function header() {
    var who = document.getElementById("who");
    who.textContent = "";
    if (session.user) {
      who.appendChild(h("span", { "class": "user", text: session.user + " (" + session.role + ")" }));
      who.appendChild(h("button", { type: "button", id: "logout", onclick: function () {
        post("/api/logout", {}).then(function () { location.reload(); });
      } }, T("logout")));
    } else if (PAGE !== "login") {
      who.appendChild(h("a", { href: "/login?next=" + encodeURIComponent(location.pathname), id: "login-link" }, T("login")));
    }
    document.getElementById("lang").onclick = function () {
      document.cookie = "lang=" + (LANG === "zh-CN" ? "en" : "zh-CN") + "; path=/; SameSite=Strict; max-age=31536000";
      location.reload();
    };
  }

  /* ---------- alarms (characteristic page and alarm page) ---------- */
  var DURATIONS = ["15m", "30m", "1h", "4h", "8h"];
  function choice(name, list) {
    if (!list || !list.length) return h("input", { name: name, maxlength: 200, "class": name });
    var s = h("select", { name: name, "class": name }, h("option", { value: "" }, "–"));
    list.forEach(function (c) { s.appendChild(h("option", { value: c }, c)); });
    return s;
  }
  // What a card shows, apart from its form (so a form being filled in survives updates).
  function alarmInfo(ch, a) {
    var info = h("div", { "class": "alarm-info" });
    info.appendChild(h("div", { "class": "alarm-head" },
      h("b", null, ch), " · ", a.chart ? T("chart." + a.chart) : T("out-of-spec"), " · ",
      h("span", { "class": "state" }, a.state || ""), " · ", T("raised") + " " + (a.raised_at || "").replace("T", " ").substr(0, 19)));
    var rules = h("ul", { "class": "rules" });
    (a.rules || []).forEach(function (r) { rules.appendChild(h("li", { "class": "rule", "data-rule": r.rule }, ruleText(r))); });
    info.appendChild(rules);
    if (a.points && a.points.length) {
      info.appendChild(h("div", { "class": "pts" }, T("points") + ": " + a.points.map(function (p) {
        return (p.subgroup ? "#" + p.subgroup : "seq " + p.seq) + " = " + fmt(p.value);
      }).join(", ")));
    }
    if (a.context) info.appendChild(h("div", { "class": "ctx" }, Object.keys(a.context).map(function (k) { return k + ": " + a.context[k]; }).join(" · ")));
    if (a.reaction_plan && a.reaction_plan.length) {
      var ol = h("ol", { "class": "reaction" });
      a.reaction_plan.forEach(function (s) { ol.appendChild(h("li", null, s)); });
      info.appendChild(h("div", null, h("b", null, T("reaction")), ol));
    }
    if (a.ack) info.appendChild(h("div", { "class": "acked" }, T("acked") + ": " + (a.ack.by || "") + (a.ack.cause ? " · " + a.ack.cause : "") + (a.ack.action ? " · " + a.ack.action : "")));
    return info;
  }
  function ackForm(ch, a) {
    var cause = choice("cause", session.causes), action = choice("action", session.actions);
    var result = h("span", { "class": "result" });
    return h("form", { "class": "ack-form", onsubmit: function (e) {
      e.preventDefault();
      post("/api/ack", { characteristic: ch, alarm_seq: a.id, cause: cause.value || null, action: action.value || null }).then(function (r) {
        result.textContent = r.ok ? T("sent") : T("refused") + ": " + (r.body.error || r.status);
        result.className = "result " + (r.ok ? "ok" : "err");
      });
    } }, h("label", null, T("cause") + " ", cause), h("label", null, T("action") + " ", action),
      h("button", { type: "submit", "class": "ack" }, T("ack")), result);
  }
  /* Creates or updates the card of alarm `a` in place. */
  function alarmCard(ch, a, card) {
    card = card || h("div", { "data-id": a.id });
    card.className = "alarm " + (a.state || "");
    card.setAttribute("data-state", a.state || "");
    var old = card.querySelector(".alarm-info"), info = alarmInfo(ch, a);
    if (old) card.replaceChild(info, old); else card.insertBefore(info, card.firstChild);
    var form = card.querySelector("form.ack-form");
    var unacked = !a.state || /unacked$/.test(a.state);
    if (unacked && session.user && !form) card.appendChild(ackForm(ch, a));
    if (!unacked && form && !form.querySelector(".result.ok")) card.removeChild(form);
    return card;
  }
  function shelveForm(ch, suppression) {
    if (!session.user) return h("p", { "class": "hint" }, T("needs.login"));
    var result = h("span", { "class": "result" });
    var shelved = suppression && suppression.state === "shelved";
    var dur = h("select", { name: "for" }); DURATIONS.forEach(function (d) { dur.appendChild(h("option", { value: d }, d)); });
    var note = h("input", { name: "note", maxlength: 1000, placeholder: T("note") });
    return h("form", { "class": "shelve-form", onsubmit: function (e) {
      e.preventDefault();
      post("/api/shelve", shelved ? { characteristic: ch, unshelve: true } : { characteristic: ch, "for": dur.value, note: note.value || null }).then(function (r) {
        result.textContent = r.ok ? T("sent") : T("refused") + ": " + (r.body.error || r.status);
      });
    } }, shelved ? h("span", null, T("shelved") + " " + (suppression.until || "")) : h("span", null, T("for") + " ", dur, " ", note),
      h("button", { type: "submit", "class": "shelve" }, T(shelved ? "unshelve" : "shelve")), result);
  }
  function alarmList(container, ch, active) {
    var list = (active && active.alarms) || [];
    var cards = {};
    container.querySelectorAll(".alarm[data-id]").forEach(function (c) { cards[c.getAttribute("data-id")] = c; });
    container.querySelectorAll(":scope > p").forEach(function (p) { container.removeChild(p); });
    var keep = {};
    list.forEach(function (a, i) {
      var card = alarmCard(ch, a, cards[String(a.id)]);
      keep[String(a.id)] = true;
      var at = container.children[i];
      if (at !== card) container.insertBefore(card, at || null);
    });
    Object.keys(cards).forEach(function (id) { if (!keep[id]) container.removeChild(cards[id]); });
    if (!list.length) container.appendChild(h("p", { "class": "none" }, T("no.alarms")));
    if (!session.user && list.length) container.appendChild(h("p", { "class": "hint" }, T("needs.login")));
  }

  /* ---------- overview ---------- */
  function overview() {
    var tbody = h("tbody");
    main.appendChild(h("h1", null, T("nav.overview")));
    main.appendChild(h("table", { id: "overview", "class": "grid" },
      h("thead", null, h("tr", null, h("th", null, T("characteristic")), h("th", null, T("chart")), h("th", null, T("state")),
        h("th", null, T("last")), h("th", null, T("cpk")), h("th", null, T("open")))), tbody));
    var rows = {};
    function row(s) {
      var tr = rows[s.name];
      if (!tr) { tr = rows[s.name] = h("tr"); tbody.appendChild(tr); }
      tr.textContent = "";
      tr.className = "ch state-" + s.state;
      tr.setAttribute("data-name", s.name);
      tr.setAttribute("data-state", s.state);
      var newest = s.newest_alarm && s.newest_alarm.rules && s.newest_alarm.rules[0];
      tr.appendChild(h("td", null, h("a", { href: "/ch/" + encodeURIComponent(s.name) }, s.name)));
      tr.appendChild(h("td", null, s.chart));
      tr.appendChild(h("td", null, h("span", { "class": "badge " + s.state }, T("state." + s.state)), s.suppression ? " ⏸" : ""));
      tr.appendChild(h("td", { "class": "num last" }, fmt(s.last_value) + (s.unit ? " " + s.unit : "")));
      tr.appendChild(h("td", { "class": "num cpk" + (s.cpk !== null && s.cpk < 1.33 ? " low" : "") }, s.cpk === null ? "–" : s.cpk.toFixed(2)));
      tr.appendChild(h("td", { "class": "open" }, s.open_alarms ? s.open_alarms + (newest ? " · " + ruleText(newest) : "") : "–"));
    }
    function load() { return api("/api/overview").then(function (d) { d.characteristics.forEach(row); }); }
    load().then(function () {
      stream(null, {
        point: function (e) { row(e.summary); }, capability: function (e) { row(e.summary); },
        active: function (e) { row(e.summary); }, limits: function (e) { row(e.summary); }, reset: load
      });
    });
  }

  /* ---------- characteristic ---------- */
  var ORDER = ["i", "xbar", "ewma", "cusum-upper", "p", "np", "c", "u", "mr", "r", "s", "cusum-lower"];
  function characteristic() {
    var snap = null, charts = {}, history = 100, svgs = {};
    var title = h("h1", null, CH), infoBox = h("div", { "class": "info" });
    var chartBox = h("div", { id: "charts" }), capBox = h("div", { "class": "cap" }), hist = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    var alarmBox = h("div", { id: "alarms" }), shelveBox = h("div", { "class": "shelve-box" }), extra = h("div");
    hist.setAttribute("id", "histogram");
    main.appendChild(title); main.appendChild(infoBox);
    main.appendChild(h("div", { "class": "cols" },
      h("section", { "class": "charts-col" }, chartBox),
      h("section", { "class": "side-col" }, h("h2", null, T("alarms")), alarmBox, shelveBox, extra,
        h("h2", null, T("capability")), capBox, h("h3", null, T("histogram")), hist)));
    function key(c) { return c.chart + (c.partition ? " · " + c.partition : ""); }
    function draw(k) {
      var c = charts[k]; if (!c) return;
      var svg = svgs[k];
      if (!svg) {
        svg = svgs[k] = document.createElementNS("http://www.w3.org/2000/svg", "svg");
        svg.setAttribute("id", "chart-" + k.replace(/[^a-z0-9-]/gi, "_"));
        var sec = h("div", { "class": "chart-box", "data-order": ORDER.indexOf(c.chart) }, h("h3", null, T("chart." + c.chart) + (c.partition ? " · " + c.partition : "")), svg);
        var after = null;
        chartBox.querySelectorAll(".chart-box").forEach(function (b) { if (after === null && +b.getAttribute("data-order") > ORDER.indexOf(c.chart)) after = b; });
        chartBox.insertBefore(sec, after);
      }
      var info = snap.info, loc = ["i", "xbar"].indexOf(c.chart) >= 0;
      Charts.drawChart(svg, c.points, { chart: c.chart, usl: info.usl, lsl: info.lsl, target: info.target, spec: loc, onHover: showTip });
    }
    function capability() {
      capBox.textContent = "";
      var c = snap.capability, info = snap.info;
      var t = h("table", { "class": "kv", id: "capability" });
      var rows = [["Cp", c && c.cp], ["Cpk", c && c.cpk], ["Pp", c && c.pp], ["Ppk", c && c.ppk], ["Cpm", c && c.cpm],
        [T("mean"), c && c.mean], [T("sigma_within"), c && c.sigma_within], [T("sigma_overall"), c && c.sigma_overall],
        [T("usl"), info.usl], [T("lsl"), info.lsl], [T("target"), info.target]];
      rows.forEach(function (r) { t.appendChild(h("tr", null, h("th", null, r[0]), h("td", { "class": "num" }, fmt(r[1])))); });
      if (c) t.appendChild(h("tr", null, h("th", null, T("subgroups")), h("td", { "class": "num" }, c.subgroups + " / " + c.observations)));
      capBox.appendChild(t);
      Charts.drawHistogram(hist, snap.values || [], { usl: info.usl, lsl: info.lsl, target: info.target, mean: c ? c.mean : undefined, sigma: c ? c.sigma_overall : 0 });
    }
    function infoLine() {
      var i = snap.info;
      infoBox.textContent = "";
      infoBox.appendChild(h("span", { "class": "badge " + snap.summary.state, id: "state" }, T("state." + snap.summary.state)));
      infoBox.appendChild(document.createTextNode(" " + i.chart + (i.subgroup_size ? " · n=" + i.subgroup_size : "") + " · " + i.source +
        (i.unit ? " · " + i.unit : "") + " · " + T("usl") + " " + fmt(i.usl) + " · " + T("lsl") + " " + fmt(i.lsl)));
    }
    function alarms() {
      alarmList(alarmBox, CH, snap.active);
      shelveBox.textContent = "";
      shelveBox.appendChild(shelveForm(CH, snap.summary.suppression));
    }
    function load() {
      return api("/api/ch/" + encodeURIComponent(CH)).then(function (d) {
        snap = d; charts = {};
        d.charts.forEach(function (c) { charts[key(c)] = c; history = Math.max(history, c.points.length); });
        Object.keys(charts).forEach(draw);
        capability(); infoLine(); alarms();
        if (session.role === "engineer" && !extra.firstChild) {
          var res = h("span", { "class": "result" });
          extra.appendChild(h("p", null, h("button", { type: "button", id: "recalculate", onclick: function () {
            post("/api/recalculate", { characteristic: CH }).then(function (r) { res.textContent = r.ok ? T("sent") : T("refused") + ": " + (r.body.error || r.status); });
          } }, T("recalculate")), " ", res));
        }
      });
    }
    load().then(function () {
      stream(CH, {
        point: function (e) {
          var p = e.doc, k = key(p), c = charts[k];
          if (!c) c = charts[k] = { chart: p.chart, partition: p.partition, points: [] };
          var i = c.points.length - 1;
          while (i >= 0 && c.points[i].seq !== p.seq) i--;
          if (i >= 0) c.points[i] = p; else c.points.push(p);
          while (c.points.length > history) c.points.shift();
          snap.summary = e.summary; draw(k); infoLine();
        },
        limits: function (e) { snap.limits = e.doc; },
        capability: function (e) {
          snap.capability = e.doc;
          // The histogram's values are kept by the agent: take the fresh ones with the new figures.
          api("/api/ch/" + encodeURIComponent(CH)).then(function (d) { snap.values = d.values; capability(); });
        },
        active: function (e) { snap.active = e.doc; snap.summary = e.summary; alarms(); infoLine(); },
        reset: load
      });
    });
  }

  /* ---------- alarms page ---------- */
  function alarmsPage() {
    main.appendChild(h("h1", null, T("alarms")));
    var box = h("div", { id: "alarms" });
    main.appendChild(box);
    function load() {
      return api("/api/alarms").then(function (d) {
        box.textContent = "";
        if (!d.alarms.length) box.appendChild(h("p", { "class": "none" }, T("no.alarms")));
        d.alarms.forEach(function (x) {
          var sec = h("section", { "data-name": x.characteristic }, h("h2", null, h("a", { href: "/ch/" + encodeURIComponent(x.characteristic) }, x.characteristic)));
          var inner = h("div"); sec.appendChild(inner);
          alarmList(inner, x.characteristic, x.doc);
          box.appendChild(sec);
        });
      });
    }
    load().then(function () { stream(null, { active: load, reset: load }); });
  }

  /* ---------- devices ---------- */
  function devicesPage() {
    main.appendChild(h("h1", null, T("nav.devices")));
    var tbody = h("tbody");
    main.appendChild(h("table", { id: "devices", "class": "grid" }, h("thead", null, h("tr", null,
      h("th", null, T("device")), h("th", null, T("driver")), h("th", null, T("connected")), h("th", null, T("readings")),
      h("th", null, T("bad.rate")), h("th", null, T("last.reading")))), tbody));
    function render(d) {
      tbody.textContent = "";
      d.devices.forEach(function (x) {
        var seen = x.seen || {};
        var rate = x.readings ? (100 * x.bad_readings / x.readings) : 0;
        tbody.appendChild(h("tr", { "data-name": x.name, "class": "dev " + x.state },
          h("td", null, x.name), h("td", null, x.driver), h("td", null, h("span", { "class": "badge dev-" + x.state }, x.state)),
          h("td", { "class": "num" }, x.readings), h("td", { "class": "num" + (rate > 1 ? " low" : "") }, rate.toFixed(2) + " %"),
          h("td", null, (seen.last_reading || "–").replace("T", " ").substr(0, 23)),
          x.last_error ? h("td", { "class": "err" }, x.last_error) : null));
      });
    }
    api("/api/devices").then(render).then(function () { stream(null, { devices: render }); });
  }

  /* ---------- login ---------- */
  function loginPage() {
    var user = h("input", { name: "user", id: "user", autocomplete: "username", required: "" });
    var pass = h("input", { name: "password", id: "password", type: "password", autocomplete: "current-password", required: "" });
    var msg = h("p", { "class": "result err", id: "login-error" });
    main.appendChild(h("form", { id: "login-form", "class": "login", onsubmit: function (e) {
      e.preventDefault();
      post("/api/login", { user: user.value, password: pass.value }).then(function (r) {
        if (r.ok) {
          var next = new URLSearchParams(location.search).get("next") || "/";
          location.href = next.charAt(0) === "/" && next.charAt(1) !== "/" ? next : "/";
        } else msg.textContent = T("login.failed") + ": " + (r.body.error || r.status);
      });
    } }, h("h1", null, T("login")), h("label", null, T("user"), user), h("label", null, T("password"), pass),
      h("button", { type: "submit", id: "login-submit" }, T("login")), msg));
  }

  translate();
  api("/api/session").catch(function () { return {}; }).then(function (s) {
    session = s || session; session.causes = session.causes || []; session.actions = session.actions || [];
    state.user = session.user;
    header();
    ({ overview: overview, characteristic: characteristic, alarms: alarmsPage, devices: devicesPage, login: loginPage }[PAGE] || overview)();
  });
})();
