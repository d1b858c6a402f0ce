// Vega-Lite specs of the studio's charts, rendered as SVG with the vendored vega + vega-lite builds.
"use strict";

const Charts = (() => {
  const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf"];
  const colour = (i) => PALETTE[i % PALETTE.length];
  const views = new Map(); // element id -> vega.View, finalized before re-rendering

  async function render(el, spec, onClick) {
    const old = views.get(el.id);
    if (old) old.finalize();
    const width = Math.max(200, Math.floor(el.clientWidth || 320) - 16);
    const full = Object.assign({ $schema: "https://vega.github.io/schema/vega-lite/v6.json", width,
      config: { font: "system-ui, sans-serif", view: { stroke: null }, axis: { labelFontSize: 11, titleFontSize: 11 } } },
      spec);
    const view = new vega.View(vega.parse(vegaLite.compile(full).spec), { renderer: "svg", container: el, hover: true });
    if (onClick) view.addEventListener("click", (_, item) => item && item.datum && onClick(item.datum));
    views.set(el.id, view);
    await view.runAsync();
    return view;
  }

  function map(points, cohorts, selected) {
    const names = Object.fromEntries(cohorts.map((c) => [c.id, c.name]));
    const ids = cohorts.map((c) => c.id);
    const values = points.x.map((x, i) => ({ x, y: points.y[i], cohort_id: points.cohort_id[i],
      cohort: names[points.cohort_id[i]] || String(points.cohort_id[i]), user_id: points.user_id[i] }));
    return {
      height: 340, data: { values },
      mark: { type: "circle", size: 18 },
      encoding: {
        x: { field: "x", type: "quantitative", axis: null }, y: { field: "y", type: "quantitative", axis: null },
        color: { field: "cohort_id", type: "nominal", legend: null,
          scale: { domain: ids, range: ids.map((_, i) => colour(i)) } },
        opacity: selected == null ? { value: 0.7 } :
          { condition: { test: `datum.cohort_id === ${Number(selected)}`, value: 0.95 }, value: 0.25 },
        tooltip: [{ field: "cohort", title: "cohort" }, { field: "user_id", title: "user" }],
      },
    };
  }

  function lift(profile) {
    const rel = profile.relative || {};
    const label = { recency: "days since last event", frequency: "events", monetary: "spend",
      engagement: "active days", tenure: "tenure" };
    const rows = Object.keys(label).filter((k) => k in rel).map((k) => ({ what: label[k], kind: "behaviour", lift: rel[k] }));
    for (const s of (profile.top_categories || []).slice(0, 5)) rows.push({ what: `category: ${s.value}`, kind: "category", lift: s.lift, share: s.share });
    for (const s of (profile.top_events || []).slice(0, 4)) rows.push({ what: `event: ${s.value}`, kind: "event", lift: s.lift, share: s.share });
    const clean = rows.filter((r) => Number.isFinite(r.lift)).map((r) => ({ ...r, shown: Math.min(20, Math.max(0.05, r.lift)) }));
    return {
      height: { step: 18 }, data: { values: clean },
      layer: [
        { mark: { type: "bar", cornerRadius: 2 },
          encoding: {
            y: { field: "what", type: "nominal", sort: null, title: null, axis: { labelLimit: 170 } },
            x: { field: "shown", type: "quantitative", scale: { type: "log", domain: [0.1, 10], clamp: true },
              title: "× the population (log scale)" },
            x2: { datum: 1 },
            color: { field: "kind", type: "nominal", legend: { orient: "bottom", title: null },
              scale: { range: ["#4e79a7", "#f28e2b", "#59a14f"] } },
            tooltip: [{ field: "what" }, { field: "lift", format: ".2f", title: "× population" }, { field: "share", format: ".1%" }],
          } },
        { mark: { type: "rule", color: "#555" }, encoding: { x: { datum: 1 } } },
      ],
    };
  }

  function hist(values, labels, title) {
    return {
      height: 110, data: { values: values.map((v, i) => ({ label: labels[i], share: v, order: i })) },
      mark: { type: "bar", color: "#4e79a7" },
      encoding: {
        x: { field: "label", type: "ordinal", sort: { field: "order" }, title, axis: { labelAngle: 0 } },
        y: { field: "share", type: "quantitative", axis: { format: "%" }, title: null },
        tooltip: [{ field: "label", title }, { field: "share", format: ".1%" }],
      },
    };
  }

  function sizing(curve, current) {
    return {
      height: 120, data: { values: curve },
      layer: [
        { mark: { type: "line", color: "#4e79a7" },
          encoding: { x: { field: "size", type: "quantitative", title: "audience size" },
            y: { field: "expected", type: "quantitative", title: "expected conversions" } } },
        { data: { values: [current] }, mark: { type: "point", filled: true, size: 80, color: "#e15759" },
          encoding: { x: { field: "size", type: "quantitative" }, y: { field: "expected", type: "quantitative" } } },
      ],
    };
  }

  return { render, map, lift, hist, sizing, colour };
})();
