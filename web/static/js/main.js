// main.js — wires the page: token, models, upload and job progress, the
// result card, downloads and the viewer controls.

import { getToken, setToken, getJSON, getBinary, uploadStudy, pollJob, download } from "./api.js";
import { Viewer, makeVolume, presets } from "./viewer.js";

const CAVEAT = "Trained on synthetic data; not for clinical use.";
const $ = (id) => document.getElementById(id);

const state = { files: [], result: null, series: 0, busy: false };

function showError(msg) {
  const el = $("error");
  el.textContent = msg;
  el.hidden = false;
}

function clearError() {
  const el = $("error");
  el.textContent = "";
  el.hidden = true;
}

function setStatus(msg) {
  $("status").textContent = msg;
}

const enc = encodeURIComponent;
const studyURL = (id) => `/api/v1/studies/${enc(id)}`;
const seriesURL = (id, n) => `${studyURL(id)}/series/${n}`;

// ---- token ----

function initToken() {
  const input = $("token");
  input.value = getToken();
  input.addEventListener("change", () => {
    setToken(input.value.trim());
    clearError();
    loadModels();
  });
}

// ---- models ----

async function loadModels() {
  const sel = $("model");
  try {
    const models = await getJSON("/api/v1/models", "models");
    if (!Array.isArray(models) || models.length === 0) throw new Error("models: the server lists no models");
    sel.replaceChildren();
    for (const m of models) {
      const opt = document.createElement("option");
      opt.value = m.name;
      opt.textContent = `${m.name}${m.arch ? " (" + m.arch + ")" : ""}${m.default ? " — default" : ""}`;
      opt.selected = !!m.default;
      opt.dataset.desc = [m.description, m.classes && "classes: " + m.classes.join(", ")].filter(Boolean).join(" · ");
      sel.appendChild(opt);
    }
    describeModel();
  } catch (e) {
    sel.replaceChildren(new Option("(models unavailable)", ""));
    showError(e.message);
  }
}

function describeModel() {
  const opt = $("model").selectedOptions[0];
  $("model-desc").textContent = (opt && opt.dataset.desc) || "";
}

// ---- upload and job ----

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function chooseFiles(input, other) {
  state.files = Array.from(input.files || []);
  other.value = "";
  const total = state.files.reduce((s, f) => s + f.size, 0);
  $("selection").textContent = state.files.length
    ? `${state.files.length} file${state.files.length === 1 ? "" : "s"} chosen (${formatBytes(total)}).`
    : "No files chosen.";
}

function setBusy(busy) {
  state.busy = busy;
  $("submit").disabled = busy;
  $("upload-form").setAttribute("aria-busy", String(busy));
}

async function analyse(ev) {
  ev.preventDefault();
  if (state.busy) return;
  clearError();
  if (state.files.length === 0) {
    showError("Choose a DICOM folder, a .zip or a NIfTI file first.");
    $("folder").focus();
    return;
  }
  setBusy(true);
  $("upload-progress").value = 0;
  $("job-progress").value = 0;
  try {
    setStatus("Uploading…");
    const fields = { model: $("model").value, heatmap: $("heatmap").checked ? "true" : "false", method: $("method").value };
    const accepted = await uploadStudy(state.files, fields, (f) => {
      $("upload-progress").value = Math.round(100 * f);
      setStatus(`Uploading… ${Math.round(100 * f)} %`);
    });
    const statusUrl = accepted.status_url || `/api/v1/jobs/${enc(accepted.job_id)}`;
    setStatus("Queued.");
    const job = await pollJob(statusUrl, (j) => {
      $("job-progress").value = Math.round(100 * (j.progress || 0));
      setStatus(`${j.state}${j.stage ? " — " + j.stage : ""} (${Math.round(100 * (j.progress || 0))} %)`);
    });
    const studyId = job.study_id || accepted.study_id;
    const result = await getJSON(`${studyURL(studyId)}/result`, "result");
    $("job-progress").value = 100;
    setStatus("Done.");
    showResult(result);
  } catch (e) {
    setStatus("Failed.");
    showError(e.message);
  } finally {
    setBusy(false);
  }
}

// ---- result card ----

function showResult(result) {
  if (!result || !Array.isArray(result.series) || result.series.length === 0) {
    showError("result: the server returned no series for this study");
    return;
  }
  state.result = result;
  const sel = $("series");
  sel.replaceChildren();
  result.series.forEach((s, n) => {
    sel.appendChild(new Option(`${n + 1}: ${s.description || s.series_uid || "series"}`, String(n)));
  });
  $("series-field").hidden = result.series.length < 2;
  $("result").hidden = false;
  selectSeries(0);
}

function selectSeries(n) {
  state.series = n;
  const r = state.result;
  const s = r.series[n];
  const m = r.model || {};
  $("series").value = String(n);
  $("predicted").textContent = s.predicted || "—";
  const classes = (m.classes && m.classes.length ? m.classes : Object.keys(s.probabilities || {}));
  const list = $("probs");
  list.replaceChildren();
  for (const c of classes) {
    const p = Number((s.probabilities || {})[c] || 0);
    const pct = (100 * p).toFixed(1) + "%";
    const li = document.createElement("li");
    li.className = "prob" + (c === s.predicted ? " top" : "");
    li.dataset.class = c;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = c;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-label", `${c} probability`);
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", (100 * p).toFixed(1));
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = `${Math.min(100, Math.max(0, 100 * p))}%`;
    bar.appendChild(fill);
    const val = document.createElement("span");
    val.className = "value";
    val.textContent = pct;
    li.append(label, bar, val);
    list.appendChild(li);
  }
  $("model-name").textContent = [m.name, m.version, m.arch && `(${m.arch})`].filter(Boolean).join(" ");
  const dims = s.dims ? s.dims.join("×") : "?";
  const sp = s.spacing ? s.spacing.map((x) => Number(x).toFixed(2)).join("×") + " mm" : "";
  $("series-desc").textContent = `${s.description || s.series_uid || ""} ${dims} ${sp}`.trim();
  const h = s.heatmap;
  $("heat-desc").textContent = h
    ? `${h.method} for ${h.class}, peak at voxel ${(h.peak_voxel || []).join(", ")}` +
      (h.lung_share !== undefined ? `, ${(100 * h.lung_share).toFixed(0)} % inside the lungs` : "")
    : "not computed";
  const warn = $("warnings");
  warn.replaceChildren();
  for (const w of s.warnings || []) {
    const li = document.createElement("li");
    li.textContent = w;
    warn.appendChild(li);
  }
  $("caveat").textContent = m.caveat || CAVEAT;
  $("dl-heatmap").disabled = !h;
  $("jump").disabled = !h;
  loadViewer(r.study_id, n, s);
}

// ---- viewer ----

let viewer;

async function loadViewer(studyId, n, s) {
  setStatus("Loading the volume…");
  try {
    const base = seriesURL(studyId, n);
    const [vol, heat] = await Promise.all([
      getBinary(`${base}/volume.bin`, "volume"),
      s.heatmap ? getBinary(`${base}/heat.bin`, "heatmap volume") : Promise.resolve(null),
    ]);
    if (state.series !== n || state.result.study_id !== studyId) return; // superseded
    const v = makeVolume(vol, heat);
    $("overlay-controls").disabled = !v.heat;
    $("viewer").hidden = false;
    viewer.setVolume(v);
    setStatus("Done.");
  } catch (e) {
    setStatus("Failed to load the volume.");
    showError(e.message);
  }
}

function syncWindowInputs(ww, wl) {
  $("ww").value = String(ww);
  $("wl").value = String(wl);
}

function initViewer() {
  const planes = ["axial", "coronal", "sagittal"];
  const canvases = {}, labels = {};
  for (const p of planes) {
    canvases[p] = $(`plane-${p}`);
    labels[p] = $(`idx-${p}`);
  }
  viewer = new Viewer(canvases, labels, syncWindowInputs);
  syncWindowInputs(viewer.ww, viewer.wl);
  for (const b of document.querySelectorAll("[data-preset]")) {
    b.addEventListener("click", () => {
      const pr = presets[b.dataset.preset];
      viewer.setWindow(pr.ww, pr.wl);
      syncWindowInputs(viewer.ww, viewer.wl);
    });
  }
  const applyWindow = () => {
    const ww = Number($("ww").value), wl = Number($("wl").value);
    if (!Number.isFinite(ww) || ww < 1 || !Number.isFinite(wl)) {
      showError("Window width must be a number ≥ 1 HU and level a number in HU.");
      return;
    }
    viewer.setWindow(ww, wl);
  };
  $("ww").addEventListener("change", applyWindow);
  $("wl").addEventListener("change", applyWindow);
  const overlay = () => {
    const o = {
      show: $("overlay").checked,
      opacity: Number($("opacity").value) / 100,
      threshold: Number($("threshold").value),
      cmap: $("colormap").value,
    };
    $("opacity-out").textContent = `${$("opacity").value} %`;
    $("threshold-out").textContent = $("threshold").value;
    viewer.setOverlay(o);
  };
  for (const id of ["overlay", "opacity", "threshold", "colormap"]) {
    $(id).addEventListener("input", overlay);
    $(id).addEventListener("change", overlay);
  }
  overlay();
  $("jump").addEventListener("click", () => {
    const h = state.result && state.result.series[state.series].heatmap;
    if (h && Array.isArray(h.peak_voxel)) {
      viewer.goTo(h.peak_voxel);
      $("plane-axial").focus();
    }
  });
}

// ---- downloads ----

function initDownloads() {
  $("dl-heatmap").addEventListener("click", async () => {
    const r = state.result;
    if (!r) return;
    clearError();
    try {
      await download(`${seriesURL(r.study_id, state.series)}/heatmap.nii.gz`,
        `${r.study_id}-series${state.series}-heatmap.nii.gz`, "heatmap download");
    } catch (e) {
      showError(e.message);
    }
  });
  $("dl-report").addEventListener("click", async () => {
    const r = state.result;
    if (!r) return;
    clearError();
    try {
      await download(`${studyURL(r.study_id)}/report.md`, `${r.study_id}-report.md`, "report download");
    } catch (e) {
      showError(e.message);
    }
  });
}

function init() {
  initToken();
  initViewer();
  initDownloads();
  $("folder").addEventListener("change", () => chooseFiles($("folder"), $("files")));
  $("files").addEventListener("change", () => chooseFiles($("files"), $("folder")));
  $("model").addEventListener("change", describeModel);
  $("series").addEventListener("change", () => selectSeries(Number($("series").value)));
  $("upload-form").addEventListener("submit", analyse);
  loadModels();
}

init();
