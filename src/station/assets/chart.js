/* Control charts and the capability histogram as SVG, drawn in the browser from the points the
   station sends. No library: lines, circles and rectangles are all a control chart needs, and SVG
   elements can be inspected (and tested) like the rest of the page. */
"use strict";
(function () {
  var NS = "http://www.w3.org/2000/svg";
  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) if (attrs[k] !== undefined && attrs[k] !== null) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    var a = Math.abs(v);
    return a !== 0 && (a < 0.001 || a >= 1e6) ? v.toExponential(3) : +v.toPrecision(6) + "";
  }
  function last(a) { return a.length ? a[a.length - 1] : null; }

  /* points: the station's point documents of one chart, oldest first.
     opts: {chart, usl, lsl, target, unit, spec: bool, onHover(point, evt)} */
  function drawChart(svg, points, opts) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var W = 900, H = 260, L = 70, R = 104, Tp = 12, B = 26;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.setAttribute("class", "chart");
    svg.setAttribute("data-chart", opts.chart);
    svg.setAttribute("data-points", points.length);
    var withLimits = points.filter(function (p) { return p.limits; });
    // Baseline points have no limits of their own: draw them against the limits that followed.
    var cur = withLimits.length ? last(withLimits).limits : null;
    var ys = [];
    points.forEach(function (p) { ys.push(p.value); if (p.limits) { ys.push(p.limits.ucl); if (p.limits.lcl !== null) ys.push(p.limits.lcl); } });
    if (cur) { ys.push(cur.ucl); if (cur.lcl !== null) ys.push(cur.lcl); }
    if (opts.spec) { if (opts.usl !== null && opts.usl !== undefined) ys.push(opts.usl); if (opts.lsl !== null && opts.lsl !== undefined) ys.push(opts.lsl); }
    ys = ys.filter(function (v) { return v !== null && v !== undefined && isFinite(v); });
    var lo = Math.min.apply(null, ys.length ? ys : [0]), hi = Math.max.apply(null, ys.length ? ys : [1]);
    if (hi === lo) { hi += 1; lo -= 1; }
    var pad = (hi - lo) * 0.08; hi += pad; lo -= pad;
    var n = Math.max(points.length, 2);
    var x = function (i) { return L + (W - L - R) * (i / (n - 1)); };
    var y = function (v) { return Tp + (H - Tp - B) * (1 - (v - lo) / (hi - lo)); };
    el("rect", { x: L, y: Tp, width: W - L - R, height: H - Tp - B, "class": "plot" }, svg);
    // Baseline phase: shaded behind its points.
    var nb = 0; while (nb < points.length && points[nb].phase === "baseline") nb++;
    if (nb > 0) {
      var bx = x(nb - 1) + (nb < points.length ? (x(nb) - x(nb - 1)) / 2 : 0);
      el("rect", { x: L, y: Tp, width: Math.max(bx - L, 2), height: H - Tp - B, "class": "baseline" }, svg);
      el("text", { x: L + 4, y: Tp + 12, "class": "phase" }, svg).textContent = T("phase.baseline");
    }
    // Zones 1σ and 2σ (from the current limits) and the limit lines.
    if (cur && cur.lcl !== null) {
      var su = (cur.ucl - cur.centre) / 3, sl = (cur.centre - cur.lcl) / 3;
      el("rect", { x: L, y: y(cur.centre + 2 * su), width: W - L - R, height: Math.max(y(cur.centre + su) - y(cur.centre + 2 * su), 0), "class": "zone2" }, svg);
      el("rect", { x: L, y: y(cur.centre - sl), width: W - L - R, height: Math.max(y(cur.centre - 2 * sl) - y(cur.centre - sl), 0), "class": "zone2" }, svg);
      el("rect", { x: L, y: y(cur.centre + su), width: W - L - R, height: Math.max(y(cur.centre - sl) - y(cur.centre + su), 0), "class": "zone1" }, svg);
    }
    function limitPath(key) {
      // Per-point limits (EWMA's vary), baseline points at the first limits that came.
      var d = "", first = withLimits.length ? withLimits[0].limits : null;
      points.forEach(function (p, i) {
        var l = p.limits || first; if (!l || l[key] === null || l[key] === undefined) return;
        d += (d ? "L" : "M") + x(i).toFixed(1) + "," + y(l[key]).toFixed(1);
      });
      return d;
    }
    function label(v, text, cls) {
      el("text", { x: W - R + 4, y: y(v) + 4, "class": "lbl " + cls }, svg).textContent = text + " " + fmt(v);
    }
    if (cur) {
      [["centre", "cl", T("centre")], ["ucl", "ucl", T("ucl")], ["lcl", "lcl", T("lcl")]].forEach(function (k) {
        var d = limitPath(k[0]);
        if (d) el("path", { d: d, "class": "limit " + k[1] }, svg);
        if (cur[k[0]] !== null && cur[k[0]] !== undefined) label(cur[k[0]], k[2], k[1]);
      });
    }
    if (opts.spec) {
      [["usl", opts.usl], ["lsl", opts.lsl], ["target", opts.target]].forEach(function (s) {
        if (s[1] === null || s[1] === undefined || s[1] > hi || s[1] < lo) return;
        el("line", { x1: L, x2: W - R, y1: y(s[1]), y2: y(s[1]), "class": "spec " + s[0] }, svg);
        // Inside the plot, left: the right margin belongs to the control limits.
        if (s[0] !== "target") el("text", { x: L + 4, y: y(s[1]) - 3, "class": "lbl spec" }, svg).textContent = T(s[0]) + " " + fmt(s[1]);
      });
    }
    // Axis ticks.
    for (var t = 0; t <= 4; t++) {
      var v = lo + (hi - lo) * t / 4;
      el("text", { x: L - 6, y: y(v) + 4, "class": "tick" }, svg).textContent = +v.toPrecision(5) + "";
    }
    if (points.length) {
      el("text", { x: L, y: H - 6, "class": "tick start" }, svg).textContent = points[0].subgroup ? "#" + points[0].subgroup : (points[0].ts || "").substr(11, 8);
      el("text", { x: W - R, y: H - 6, "class": "tick end" }, svg).textContent = last(points).subgroup ? "#" + last(points).subgroup : (last(points).ts || "").substr(11, 8);
    }
    // The series and its points, coloured by the rules they broke.
    var d = "";
    points.forEach(function (p, i) { d += (i ? "L" : "M") + x(i).toFixed(1) + "," + y(p.value).toFixed(1); });
    if (d) el("path", { d: d, "class": "series" }, svg);
    points.forEach(function (p, i) {
      var rules = p.rules || [];
      var cls = "pt " + (rules.length ? "viol" : p.phase === "baseline" ? "base" : "ok");
      if (opts.spec && ((opts.usl !== null && opts.usl !== undefined && p.value > opts.usl) || (opts.lsl !== null && opts.lsl !== undefined && p.value < opts.lsl))) cls += " oos";
      var c = el("circle", { cx: x(i).toFixed(1), cy: y(p.value).toFixed(1), r: rules.length ? 5 : 3.5, "class": cls, "data-seq": p.seq, "data-ts": p.ts, "data-rules": rules.join(" "), tabindex: 0 }, svg);
      if (opts.onHover) {
        c.addEventListener("mouseenter", function (e) { opts.onHover(p, e); });
        c.addEventListener("click", function (e) { opts.onHover(p, e); });
        c.addEventListener("focus", function (e) { opts.onHover(p, e); });
        c.addEventListener("mouseleave", function () { opts.onHover(null); });
      }
    });
  }

  /* The distribution of recent readings against the specification limits. */
  function drawHistogram(svg, values, opts) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var W = 440, H = 220, L = 12, R = 12, Tp = 16, B = 28;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.setAttribute("class", "histogram");
    svg.setAttribute("data-values", values.length);
    if (!values.length) return;
    var lo = Math.min.apply(null, values), hi = Math.max.apply(null, values);
    [opts.lsl, opts.usl].forEach(function (s) { if (s !== null && s !== undefined) { lo = Math.min(lo, s); hi = Math.max(hi, s); } });
    if (hi === lo) { hi += 1; lo -= 1; }
    var pad = (hi - lo) * 0.05; lo -= pad; hi += pad;
    var bins = 24, counts = new Array(bins).fill(0);
    values.forEach(function (v) { counts[Math.min(bins - 1, Math.max(0, Math.floor((v - lo) / (hi - lo) * bins)))]++; });
    var max = Math.max.apply(null, counts) || 1;
    var x = function (v) { return L + (W - L - R) * (v - lo) / (hi - lo); };
    var bw = (W - L - R) / bins;
    counts.forEach(function (c, i) {
      var h = (H - Tp - B) * c / max;
      var mid = lo + (i + 0.5) * (hi - lo) / bins;
      var out = (opts.usl !== null && opts.usl !== undefined && mid > opts.usl) || (opts.lsl !== null && opts.lsl !== undefined && mid < opts.lsl);
      el("rect", { x: (L + i * bw + 1).toFixed(1), y: (H - B - h).toFixed(1), width: Math.max(bw - 2, 1).toFixed(1), height: h.toFixed(1), "class": "bar" + (out ? " out" : "") }, svg);
    });
    // The normal curve of the overall sigma, scaled to the bars.
    if (opts.mean !== undefined && opts.sigma > 0) {
      var d = "", scale = values.length * (hi - lo) / bins;
      for (var k = 0; k <= 80; k++) {
        var v = lo + (hi - lo) * k / 80;
        var dens = Math.exp(-0.5 * Math.pow((v - opts.mean) / opts.sigma, 2)) / (opts.sigma * Math.sqrt(2 * Math.PI));
        d += (k ? "L" : "M") + x(v).toFixed(1) + "," + (H - B - (H - Tp - B) * dens * scale / max).toFixed(1);
      }
      el("path", { d: d, "class": "normal" }, svg);
    }
    [["lsl", opts.lsl], ["usl", opts.usl], ["target", opts.target]].forEach(function (s) {
      if (s[1] === null || s[1] === undefined) return;
      el("line", { x1: x(s[1]), x2: x(s[1]), y1: Tp, y2: H - B, "class": "spec " + s[0] }, svg);
      el("text", { x: x(s[1]), y: Tp - 4, "class": "lbl spec mid" }, svg).textContent = T(s[0]);
    });
    el("text", { x: L, y: H - 8, "class": "tick start" }, svg).textContent = fmt(lo);
    el("text", { x: W - R, y: H - 8, "class": "tick end" }, svg).textContent = fmt(hi);
  }

  window.Charts = { drawChart: drawChart, drawHistogram: drawHistogram, fmt: fmt };
})();
