// Sortable tables (click a header; numbers sort by data-v) and the metric / cut-off toggle.
(function () {
  function key(td, numeric) {
    if (!td) return numeric ? -Infinity : "";
    if (numeric) {
      var v = parseFloat(td.getAttribute("data-v"));
      return isNaN(v) ? -Infinity : v;
    }
    return td.textContent.trim().toLowerCase();
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th, col) {
      th.addEventListener("click", function () {
        var numeric = th.getAttribute("data-type") === "num";
        var asc = !th.classList.contains("asc");
        table.querySelectorAll("thead th").forEach(function (h) { h.classList.remove("asc", "desc"); });
        th.classList.add(asc ? "asc" : "desc");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col], numeric), y = key(b.cells[col], numeric);
          return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  // charts drawn while the page was still being laid out (a grid's second column not yet parsed)
  // took the full width: fit them to their final boxes
  if (window.Plotly) {
    document.querySelectorAll(".js-plotly-plot").forEach(function (p) { Plotly.Plots.resize(p); });
  }
  var family = document.getElementById("metric-family"), cutoff = document.getElementById("metric-cutoff");
  if (!family) return;
  function matches(metric) {
    var parts = metric.split("@");
    return (!family.value || parts[0] === family.value) && (!cutoff.value || parts[1] === cutoff.value);
  }
  function apply() {
    document.querySelectorAll("#suite-table [data-metric]").forEach(function (el) {
      el.hidden = !matches(el.getAttribute("data-metric"));
    });
    document.querySelectorAll(".metric-charts").forEach(function (group) {
      var shown = false, all = group.hasAttribute("data-all");
      Array.prototype.forEach.call(group.children, function (el) {
        var show = matches(el.getAttribute("data-metric")) && (all || !shown);
        el.hidden = !show;
        if (show) {
          shown = true;
          el.querySelectorAll(".js-plotly-plot").forEach(function (p) { Plotly.Plots.resize(p); });
        }
      });
    });
  }
  family.addEventListener("change", apply);
  cutoff.addEventListener("change", apply);
  apply();
})();
