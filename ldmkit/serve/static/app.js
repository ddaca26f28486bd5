// The page: read the models served and what each mode takes (GET /v1/ldmkit/models), queue a job
// (POST /v1/jobs) on the chosen model and mode, poll it for progress, show its images. The form shows the
// fields of the chosen mode only, and sends only those: an image (and a mask) for the modes that start from
// one. The edit tab (edit.js) queues its jobs through runJob here too, on the chosen model. The job being
// followed and the jobs shown are kept in sessionStorage, so that a reload follows the one (progress, Cancel)
// and shows the others again, while the server still has them. Plain JS on purpose: no build step, nothing
// fetched from elsewhere.
"use strict";

const POLL_MS = 200;
const $ = (id) => document.getElementById(id);
let currentJob = null;   // the URL of the job being followed, or null
let cancelRequested = false;
let leaving = false;     // the page is being unloaded (a reload): its job goes on, to be followed again
let models = [];         // GET /v1/ldmkit/models
const RUNNING_KEY = "ldmkit.running";   // sessionStorage: {jobs, url, cancelled} of the job being followed
const SHOWN_KEY = "ldmkit.shown";       // sessionStorage: [{jobs, url}] of the finished jobs shown, oldest first
const MAX_SHOWN = 64;                   // the server keeps the last 64 jobs; older ones are gone anyway
const MODE_LABELS = {
  generate: "text to image", class: "class", img2img: "image to image", upscale: "super-resolution",
  inpaint: "inpainting", colorize: "colorization",
};

// ---------------------------------------------------------------------------------------------------
// errors: the API's 4xx/5xx bodies are {"detail": "text"} or FastAPI's {"detail": [{loc, msg}, …]}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function describeError(status, body, headers) {
  const detail = body && body.detail;
  let text;
  if (Array.isArray(detail)) {
    // loc is ["body", "width"]: name the field the way the form labels it.
    text = detail.map((e) => {
      const field = (e.loc || []).filter((part) => part !== "body").join(".");
      return field ? `${field}: ${e.msg}` : e.msg;
    }).join("\n");
  } else {
    text = typeof detail === "string" ? detail : `the server answered ${status}`;
  }
  // The server's own text may say when already ("… retry in 1 s"): say it once.
  if (status === 503 && headers && headers.get("Retry-After") && !/\b(retry|try again) in\b/i.test(text)) {
    text += ` (try again in ${headers.get("Retry-After")} s)`;
  }
  return text;
}

async function api(method, url, payload) {
  let response;
  try {
    response = await fetch(url, {
      method,
      headers: payload ? { "Content-Type": "application/json" } : {},
      body: payload ? JSON.stringify(payload) : undefined,
    });
  } catch (e) {
    throw new Error("cannot reach the server: " + e.message);
  }
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON: described by the status alone */ }
  if (!response.ok) {
    const error = new Error(describeError(response.status, body, response.headers));
    error.status = response.status;
    throw error;
  }
  return body;
}

// sessionStorage, where it works (it may be off): JSON values, null for none.
function loadSession(key) {
  try { return JSON.parse(sessionStorage.getItem(key)); } catch (e) { return null; }
}

function storeSession(key, value) {
  try {
    if (value === null) sessionStorage.removeItem(key); else sessionStorage.setItem(key, JSON.stringify(value));
  } catch (e) { /* storage off or full: a reload then forgets, as it did before */ }
}

// ---------------------------------------------------------------------------------------------------
// the model and mode

function currentModel() {
  return models.find((m) => m.id === $("model_id").value) || models[0];
}

// The sides offered start at min_size, from which any width goes with any height (a smaller side is allowed
// only with a larger other one: the API takes it, the form keeps to what always works).
function fillSizes(select, model) {
  select.innerHTML = "";
  for (let size = model.min_size; size <= model.max_size; size += model.latent_factor) {
    const option = new Option(String(size), String(size), false, size === model.default_size);
    select.add(option);
  }
}

function fillOptions(select, values, labels = {}) {
  select.innerHTML = "";
  for (const [i, value] of values.entries()) select.add(new Option(labels[value] || value, value, i === 0, i === 0));
}

// The fields of the chosen mode shown (and required where the mode needs them), the others hidden and their
// controls disabled: a hidden field with a value out of bounds must not block Generate (the browser cannot
// show it to be fixed), and is not sent.
function applyMode() {
  const model = currentModel();
  const mode = $("mode").value;
  const accepts = model.accepts[mode];
  const required = model.required[mode];
  for (const element of document.querySelectorAll("#form [data-field]")) {
    const shown = accepts.includes(element.dataset.field);
    element.hidden = !shown;
    for (const control of element.querySelectorAll("input, select, textarea")) control.disabled = !shown;
  }
  $("prompt").required = required.includes("prompt");
  $("prompt-optional").hidden = required.includes("prompt");
  $("image").required = required.includes("image");
  $("mask").required = required.includes("mask");
  $("guidance").value = model.default_guidance[mode];
  $("form").dataset.mode = mode;
}

function applyModel() {
  const model = currentModel();
  const size = `${model.default_size}×${model.default_size}`;
  $("model").textContent = `model: ${model.id} · ${model.kind} · trained at ${size}`;
  fillOptions($("mode"), model.modes, MODE_LABELS);
  fillOptions($("sampler"), model.samplers);
  fillOptions($("class_name"), model.classes);
  $("steps").value = model.default_steps;
  fillSizes($("width"), model);
  fillSizes($("height"), model);
  $("steps").max = model.max_steps;
  $("num_images").max = model.max_images;
  $("guidance").max = model.max_guidance;
  $("cache_depth").max = model.max_cache_depth;
  $("prompt").maxLength = model.max_prompt_chars;
  $("negative_prompt").maxLength = model.max_prompt_chars;
  applyMode();
  document.dispatchEvent(new CustomEvent("modelchange", { detail: model }));
}

async function loadModels() {
  try {
    ({ models } = await api("GET", "/v1/ldmkit/models"));
    fillOptions($("model_id"), models.map((m) => m.id));
    applyModel();
  } catch (e) {
    showError(e.message);
  }
}

// ---------------------------------------------------------------------------------------------------
// the form

function fileAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

// The request: the chosen model and mode, and the fields that mode takes (an optional prompt left empty is
// left out). Input files travel as data: URLs, with their names for the reproduce command.
async function readForm() {
  const model = currentModel();
  const mode = $("mode").value;
  const accepts = model.accepts[mode];
  const number = (id) => Number($(id).value);
  const seed = $("seed").value.trim();
  const values = {
    prompt: $("prompt").value,
    negative_prompt: $("negative_prompt").value,
    class_name: $("class_name").value,
    strength: number("strength"),
    steps: number("steps"),
    guidance: number("guidance"),
    binding: number("binding"),
    cache_interval: number("cache_interval"),
    cache_depth: number("cache_depth"),
    sampler: $("sampler").value,
    prompt_syntax: $("prompt_syntax").value,
    seed: seed === "" ? null : Number(seed),
    num_images: number("num_images"),
    width: number("width"),
    height: number("height"),
  };
  const payload = { model: model.id, mode };
  for (const [key, value] of Object.entries(values)) {
    if (accepts.includes(key)) payload[key] = value;
  }
  if (payload.prompt === "" && !model.required[mode].includes("prompt")) delete payload.prompt;
  for (const field of ["image", "mask"]) {
    const file = $(field).files[0];
    if (accepts.includes(field) && file) {
      payload[field] = await fileAsDataUrl(file);
      payload[`${field}_name`] = file.name.slice(-100);
    }
  }
  return payload;
}

function writeForm(settings) {
  if (settings.model && [...$("model_id").options].some((o) => o.value === settings.model)) {
    $("model_id").value = settings.model;
    applyModel();
  }
  if (currentModel().modes.includes(settings.mode)) {
    $("mode").value = settings.mode;
    applyMode();
  }
  for (const key of ["prompt", "negative_prompt", "class_name", "strength", "steps", "guidance", "binding",
                     "cache_interval", "cache_depth", "sampler", "prompt_syntax", "seed", "num_images"]) {
    if (settings[key] !== undefined) $(key).value = settings[key];
  }
  $("width").value = String(settings.width);
  $("height").value = String(settings.height);
}

// ---------------------------------------------------------------------------------------------------
// a job: queue it, follow it, show it

function setBusy(busy) {
  // One job at a time from this page, generate or edit.
  for (const button of document.querySelectorAll("form button[type=submit]")) {
    button.disabled = busy || button.dataset.unavailable === "true";
  }
  $("cancel").hidden = !busy;
  $("progress-box").hidden = !busy && $("progress").value === 0;
}

function showProgress(job) {
  const bar = $("progress");
  if (job.status === "queued") {
    bar.removeAttribute("value");   // indeterminate while waiting
    $("progress-text").textContent = `queued (position ${job.queue_position})`;
  } else {
    bar.max = job.total;
    bar.value = job.step;
    $("progress-text").textContent = job.status === "running" ? `step ${job.step} / ${job.total}` : job.status;
  }
}

function settingsLine(s, image) {
  const parts = [`${s.model} · ${MODE_LABELS[s.mode] || s.mode}`, `seed ${s.seed}`];
  if (s.num_images > 1) parts.push(`image ${image.index + 1} of ${s.num_images}`);
  parts.push(`${s.sampler} · ${s.steps} steps · guidance ${s.guidance}`, `${s.width}×${s.height}`);
  if (s.image_name) parts.push(`from ${s.image_name}` + (s.mask_name ? ` and ${s.mask_name}` : ""));
  if (s.mode === "img2img") parts.push(`strength ${s.strength}`);
  if (s.binding) parts.push(`binding ${s.binding}`);
  if (s.cache_interval > 1) {
    parts.push(`cache interval ${s.cache_interval}` + (s.cache_depth !== 1 ? ` at depth ${s.cache_depth}` : ""));
  }
  if (s.negative_prompt) parts.push(`negative: “${s.negative_prompt}”`);
  return parts.join(" · ");
}

function addToGallery(job) {
  const gallery = $("gallery");
  $("empty").hidden = true;
  const s = job.settings;
  const title = s.class_name || s.prompt || `${MODE_LABELS[s.mode] || s.mode} of ${s.image_name}`;
  // Images of one job keep their batch order; the newest job goes first.
  for (const image of [...job.images].reverse()) {
    const card = $("card").content.firstElementChild.cloneNode(true);
    const img = card.querySelector("img");
    img.src = image.url;
    img.alt = title;
    img.width = s.width;
    img.height = s.height;
    card.querySelector(".prompt").textContent = title;
    if (image.read_as) {  // words the model never saw, read as the nearest it knows
      const readAs = card.querySelector(".read-as");
      readAs.textContent = `read as: ${image.read_as}`;
      readAs.hidden = false;
    }
    card.querySelector(".settings").textContent = settingsLine(s, image);
    const download = card.querySelector(".download");
    download.href = image.url;
    download.download = image.filename;
    download.setAttribute("aria-label", `Download ${title} (seed ${image.seed}, image ${image.index + 1})`);
    card.querySelector(".command").textContent = image.command
      ? `${image.command}   # writes out/${image.filename}` : "no ldmkit command draws this image";
    card.querySelector(".reuse").addEventListener("click", () => { writeForm(s); showTab("generate"); });
    card.dataset.seed = String(image.seed);
    card.dataset.model = s.model;
    gallery.prepend(card);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function follow(jobUrl) {
  for (;;) {
    const job = await api("GET", jobUrl);
    showProgress(job);
    if (job.status === "done") return job;
    if (job.status === "cancelled" && cancelRequested) return null;  // asked for: not an error
    if (!["queued", "running"].includes(job.status)) {
      throw new Error(job.error || `the job ended: ${job.status}`);
    }
    await sleep(POLL_MS);
  }
}

// What shows a finished job of each jobs URL in the gallery (addEditToGallery: edit.js).
const SHOW = { "/v1/jobs": (job) => addToGallery(job), "/v1/edit/jobs": (job) => addEditToGallery(job) };
// A {jobs, url} kept in sessionStorage, as this page wrote it (anything else there is ignored).
const isJobEntry = (entry) => entry !== null && typeof entry === "object" && Object.hasOwn(SHOW, entry.jobs)
  && typeof entry.url === "string";

function shownJobs() {
  const shown = loadSession(SHOWN_KEY);
  return Array.isArray(shown) ? shown.filter(isJobEntry) : [];
}

function beginJob(text) {
  showError("");
  $("progress").value = 0;
  setBusy(true);
  $("progress-box").hidden = false;
  $("progress-text").textContent = text;
}

function endJob() {
  currentJob = null;
  if (!leaving) storeSession(RUNNING_KEY, null);   // a reload follows it again
  setBusy(false);
}

// Follow the job at jobUrl (of jobsUrl) with the progress bar, kept in sessionStorage while it runs, then show
// it and remember it among the jobs shown.
async function followJob(jobsUrl, jobUrl) {
  currentJob = jobUrl;
  storeSession(RUNNING_KEY, { jobs: jobsUrl, url: jobUrl, cancelled: cancelRequested });
  const finished = await follow(jobUrl);
  if (!finished) return;
  SHOW[jobsUrl](finished);
  const shown = shownJobs().filter((entry) => entry.url !== jobUrl);
  storeSession(SHOWN_KEY, [...shown, { jobs: jobsUrl, url: jobUrl }].slice(-MAX_SHOWN));
}

// POST the payload (or what the async function payload() gives) to jobsUrl, follow the job at jobsUrl/{id}
// with the progress bar, then show it in the gallery.
async function runJob(jobsUrl, payload) {
  cancelRequested = false;
  beginJob("sending…");
  try {
    const body = typeof payload === "function" ? await payload() : payload;
    const job = await api("POST", jobsUrl, body);
    await followJob(jobsUrl, `${jobsUrl}/${job.id}`);
  } catch (e) {
    if (!leaving) showError(e.message);
  } finally {
    endJob();
  }
}

// After a reload: the job this page followed, busy at once (no second job before it is followed again, and
// Cancel works), or null where there is none.
function resumingJob() {
  const saved = loadSession(RUNNING_KEY);
  if (!isJobEntry(saved)) return null;
  cancelRequested = Boolean(saved.cancelled);
  beginJob("resuming…");
  currentJob = saved.url;
  return saved;
}

// Follow that job again (its progress, Cancel, its images when done). One the server no longer has (it
// restarted) is dropped without a word.
async function resumeJob(saved) {
  if (saved === null) return;
  try {
    await followJob(saved.jobs, saved.url);
  } catch (e) {
    if (!leaving && e.status !== 404) showError(e.message);
  } finally {
    endJob();
  }
}

// After a reload: the finished jobs shown before, in their order, those the server still has (it keeps the
// last 64); the others are forgotten.
async function restoreGallery() {
  const shown = shownJobs();
  const jobs = await Promise.all(shown.map((entry) => api("GET", entry.url).catch(() => null)));
  const kept = [];
  for (const [k, job] of jobs.entries()) {
    if (job === null || job.status !== "done") continue;
    SHOW[shown[k].jobs](job);
    kept.push(shown[k]);
  }
  storeSession(SHOWN_KEY, kept);
}

async function generate(event) {
  event.preventDefault();
  await runJob("/v1/jobs", readForm);
}

async function cancel() {
  if (currentJob === null) return;
  cancelRequested = true;
  const saved = loadSession(RUNNING_KEY);
  if (saved && saved.url === currentJob) storeSession(RUNNING_KEY, { ...saved, cancelled: true });
  try { await api("DELETE", currentJob); } catch (e) { showError(e.message); }
}

document.addEventListener("DOMContentLoaded", async () => {
  $("form").addEventListener("submit", generate);
  $("cancel").addEventListener("click", cancel);
  $("model_id").addEventListener("change", applyModel);
  $("mode").addEventListener("change", applyMode);
  window.addEventListener("pagehide", () => { leaving = true; });
  window.addEventListener("pageshow", () => { leaving = false; });   // back from the back/forward cache
  const resuming = resumingJob();
  await loadModels();
  await restoreGallery();   // before the resumed job's images, which are newer
  await resumeJob(resuming);
});
