// The page: read the model's limits, queue a job (POST /v1/jobs), poll it for progress, show its images.
// The edit tab (edit.js) queues its jobs through runJob here too. Plain JS on purpose: no build step,
// nothing fetched from elsewhere.
"use strict";

const POLL_MS = 200;
const $ = (id) => document.getElementById(id);
let currentJob = null;   // the URL of the job being followed, or null
let cancelRequested = false;

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
  if (status === 503 && headers && headers.get("Retry-After")) {
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
  if (!response.ok) throw new Error(describeError(response.status, body, response.headers));
  return body;
}

// ---------------------------------------------------------------------------------------------------
// the form

function fillSizes(select, model) {
  select.innerHTML = "";
  for (let size = model.latent_factor; size <= model.max_size; size += model.latent_factor) {
    const option = new Option(String(size), String(size), false, size === model.default_size);
    select.add(option);
  }
}

async function loadModel() {
  try {
    const { models } = await api("GET", "/v1/ldmkit/models");
    const model = models[0];
    $("model").textContent = `model: ${model.id} · trained at ${model.default_size}×${model.default_size}`;
    $("sampler").innerHTML = "";
    for (const [i, name] of model.samplers.entries()) $("sampler").add(new Option(name, name, i === 0, i === 0));
    $("steps").value = model.default_steps;
    fillSizes($("width"), model);
    fillSizes($("height"), model);
    $("steps").max = model.max_steps;
    $("num_images").max = model.max_images;
    $("guidance").max = model.max_guidance;
    $("prompt").maxLength = model.max_prompt_chars;
    $("negative_prompt").maxLength = model.max_prompt_chars;
  } catch (e) {
    showError(e.message);
  }
}

function readForm() {
  const number = (id) => Number($(id).value);
  const seed = $("seed").value.trim();
  return {
    prompt: $("prompt").value,
    negative_prompt: $("negative_prompt").value,
    steps: number("steps"),
    guidance: number("guidance"),
    binding: number("binding"),
    cache_interval: number("cache_interval"),
    sampler: $("sampler").value,
    seed: seed === "" ? null : Number(seed),
    num_images: number("num_images"),
    width: number("width"),
    height: number("height"),
  };
}

function writeForm(settings) {
  for (const key of ["prompt", "negative_prompt", "steps", "guidance", "binding", "cache_interval", "sampler", "seed", "num_images"]) {
    $(key).value = settings[key];
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
  const parts = [`seed ${s.seed}`];
  if (s.num_images > 1) parts.push(`image ${image.index + 1} of ${s.num_images}`);
  parts.push(`${s.sampler} · ${s.steps} steps · guidance ${s.guidance}`, `${s.width}×${s.height}`);
  if (s.binding) parts.push(`binding ${s.binding}`);
  if (s.cache_interval > 1) parts.push(`cache interval ${s.cache_interval}`);
  if (s.negative_prompt) parts.push(`negative: “${s.negative_prompt}”`);
  return parts.join(" · ");
}

function addToGallery(job) {
  const gallery = $("gallery");
  $("empty").hidden = true;
  // Images of one job keep their batch order; the newest job goes first.
  for (const image of [...job.images].reverse()) {
    const card = $("card").content.firstElementChild.cloneNode(true);
    const img = card.querySelector("img");
    img.src = image.url;
    img.alt = job.settings.prompt;
    img.width = job.settings.width;
    img.height = job.settings.height;
    card.querySelector(".prompt").textContent = job.settings.prompt;
    card.querySelector(".settings").textContent = settingsLine(job.settings, image);
    const download = card.querySelector(".download");
    download.href = image.url;
    download.download = image.filename;
    card.querySelector(".command").textContent =
      `${image.command}   # writes out/${image.filename}`;
    card.querySelector(".reuse").addEventListener("click", () => writeForm(job.settings));
    card.dataset.seed = String(image.seed);
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

// POST payload to jobsUrl, follow the job at jobsUrl/{id} with the progress bar, then show(job).
async function runJob(jobsUrl, payload, show) {
  showError("");
  cancelRequested = false;
  $("progress").value = 0;
  setBusy(true);
  $("progress-box").hidden = false;
  $("progress-text").textContent = "sending…";
  try {
    const job = await api("POST", jobsUrl, payload);
    currentJob = `${jobsUrl}/${job.id}`;
    const finished = await follow(currentJob);
    if (finished) show(finished);
  } catch (e) {
    showError(e.message);
  } finally {
    currentJob = null;
    setBusy(false);
  }
}

async function generate(event) {
  event.preventDefault();
  await runJob("/v1/jobs", readForm(), addToGallery);
}

async function cancel() {
  if (currentJob === null) return;
  cancelRequested = true;
  try { await api("DELETE", currentJob); } catch (e) { showError(e.message); }
}

document.addEventListener("DOMContentLoaded", () => {
  $("form").addEventListener("submit", generate);
  $("cancel").addEventListener("click", cancel);
  loadModel();
});
