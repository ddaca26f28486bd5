// The edit tab: Prompt-to-Prompt (POST /v1/edit/jobs) on the model chosen above the tabs (app.js). Reads what
// that model allows from GET /v1/edit/info?model=…, queues an edit through runJob (app.js) and shows each
// pair, source and edit side by side.
"use strict";

// "Use settings" of an edit on another model than the chosen one: the steps to keep once that model's edit
// info arrives ({model, steps}), which would otherwise reset them to its default. null: none.
let keptEditSteps = null;

function showTab(name) {
  const editing = name === "edit";
  $("form").hidden = editing;
  $("edit-form").hidden = !editing;
  $("tab-generate").setAttribute("aria-selected", String(!editing));
  $("tab-edit").setAttribute("aria-selected", String(editing));
}

async function loadEditInfo(model) {
  try {
    const info = await api("GET", `/v1/edit/info?model=${encodeURIComponent(model.id)}`);
    if (info.model !== currentModel().id) return;   // the choice moved on while this was asked
    $("edit-unavailable").textContent = info.available ? "" : `This model cannot edit: ${info.reason}`;
    $("edit-unavailable").hidden = info.available;
    $("edit").dataset.unavailable = String(!info.available);
    $("edit").disabled = !info.available || currentJob !== null;
    const kept = keptEditSteps;
    keptEditSteps = null;
    if (!info.available) {
      delete $("edit-form").dataset.ready;
      return;
    }
    $("edit_steps").max = info.max_steps;
    $("edit_steps").value = kept !== null && kept.model === info.model ? kept.steps : info.default_steps;
    $("edit_num_images").max = info.max_images;
    $("edit_guidance").max = info.max_guidance;
    $("source_prompt").maxLength = info.max_prompt_chars;
    $("target_prompt").maxLength = info.max_prompt_chars;
    $("edit-form").dataset.ready = "true";
  } catch (e) {
    showError(e.message);
  }
}

function readEditForm() {
  const number = (id) => Number($(id).value);
  const seed = $("edit_seed").value.trim();
  return {
    model: currentModel().id,
    source_prompt: $("source_prompt").value,
    target_prompt: $("target_prompt").value,
    mode: $("edit_mode").value,
    cross_replace: number("cross_replace"),
    self_replace: number("self_replace"),
    blend_words: $("blend_words").value.split(/[\s,]+/).filter((w) => w !== ""),
    blend_threshold: number("blend_threshold"),
    steps: number("edit_steps"),
    guidance: number("edit_guidance"),
    seed: seed === "" ? null : Number(seed),
    num_images: number("edit_num_images"),
  };
}

function writeEditForm(s) {
  if (s.model && s.model !== currentModel().id && models.some((m) => m.id === s.model)) {
    $("model_id").value = s.model;
    keptEditSteps = { model: s.model, steps: s.steps };   // applyModel asks for its edit info, which resets steps
    applyModel();
  }
  $("source_prompt").value = s.source_prompt;
  $("target_prompt").value = s.target_prompt;
  $("edit_mode").value = s.mode;
  $("cross_replace").value = s.cross_replace;
  $("self_replace").value = s.self_replace;
  $("blend_words").value = s.blend_words.join(" ");
  $("blend_threshold").value = s.blend_threshold;
  $("edit_steps").value = s.steps;
  $("edit_guidance").value = s.guidance;
  $("edit_seed").value = s.seed;
  $("edit_num_images").value = s.num_images;
}

function editSettingsLine(s, pair) {
  const parts = [s.model, `seed ${s.seed}`];
  if (s.num_images > 1) parts.push(`pair ${pair.index + 1} of ${s.num_images}`);
  parts.push(s.mode, `${s.steps} steps · guidance ${s.guidance}`, `cross ${s.cross_replace} · self ${s.self_replace}`);
  if (s.blend_words.length) parts.push(`blend “${s.blend_words.join(" ")}” at ${s.blend_threshold}`);
  return parts.join(" · ");
}

function addEditToGallery(job) {
  $("empty").hidden = true;
  const s = job.settings;
  for (const pair of [...job.pairs].reverse()) {   // the pairs keep their batch order; the newest job goes first
    const card = $("edit-card").content.firstElementChild.cloneNode(true);
    for (const [cls, image, alt] of [["source", pair.source, s.source_prompt], ["edited", pair.edit, s.target_prompt]]) {
      const img = card.querySelector(`img.${cls}`);
      img.src = image.url;
      img.alt = alt;
    }
    card.querySelector(".prompt").textContent = `${s.source_prompt} → ${s.target_prompt}`;
    card.querySelector(".settings").textContent = editSettingsLine(s, pair);
    const links = [["download-source", pair.source, "source"], ["download-edit", pair.edit, "edit"]];
    for (const [cls, image, what] of links) {
      const link = card.querySelector(`.${cls}`);
      link.href = image.url;
      link.download = image.filename;
      link.setAttribute("aria-label", `Download the ${what} of ${s.source_prompt} → ${s.target_prompt} ` +
                                      `(seed ${s.seed}, pair ${pair.index + 1})`);
    }
    card.querySelector(".command").textContent =
      `${job.command}   # writes out/${pair.source.filename} and out/${pair.edit.filename}`;
    card.querySelector(".reuse").addEventListener("click", () => { writeEditForm(s); showTab("edit"); });
    card.dataset.seed = String(s.seed);
    $("gallery").prepend(card);
  }
}

async function submitEdit(event) {
  event.preventDefault();
  await runJob("/v1/edit/jobs", readEditForm());
}

document.addEventListener("DOMContentLoaded", () => {
  $("tab-generate").addEventListener("click", () => showTab("generate"));
  $("tab-edit").addEventListener("click", () => showTab("edit"));
  $("edit-form").addEventListener("submit", submitEdit);
  document.addEventListener("modelchange", (event) => loadEditInfo(event.detail));
});
