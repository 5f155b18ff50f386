// The website's behaviour: send a link or a picture to /predict (same origin), show the
// answer as a bar chart sorted by probability, and say what went wrong in plain words. While
// the model wakes up (503 model_waking), show how far along it is and ask again by itself.
// Plain browser JavaScript, served as written: no build step, no library.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("by-link");
  const urlInput = $("image-url");
  const fileInput = $("image-file");
  const dropZone = $("drop-zone");
  const activity = $("activity");
  const waking = $("waking");
  const wakeProgress = $("wake-progress");
  const wakeHint = $("wake-hint");
  const status = $("status");
  const errorBox = $("error");
  const result = $("result");
  const preview = $("preview");
  const topClass = $("top-class");
  const unsureNote = $("unsure");
  const modelLine = $("model");
  const bars = $("bars");
  const keyInput = $("api-key"); // only when the gateway requires API keys
  const KEY_STORE = "clothing-serving-api-key";
  // error code -> what to tell a person (the gateway's error registry, in the page)
  const words = JSON.parse($("error-words").textContent);
  const maxBytes = Number(fileInput.dataset.maxBytes);
  const maxSize = fileInput.dataset.maxSize; // the limit as the gateway states it
  // Below this top probability an answer is unsure: the gateway's site.UNSURE_BELOW says why.
  const unsureBelow = Number(result.dataset.unsureBelow);
  const TIMEOUT_MS = 90000; // above the gateway's own download and model deadlines
  // The wake's bar stops short of the end: only the answer says the model is up.
  const WAKE_BAR_CAP = 0.95;
  const RETRY_AFTER_S = 5; // when an answer in between lost the gateway's Retry-After
  const percent = new Intl.NumberFormat("en", {
    style: "percent",
    minimumFractionDigits: 1,
    maximumFractionDigits: 1,
  });
  // A measured size as the gateway states sizes (serving_contract.gateway_env.mib, rounded
  // up): MiB to two decimals, three significant digits below 1 MiB, no trailing zeros.
  function mib(count) {
    const MIB = 2 ** 20;
    let places = 2;
    while (count > 0 && count * 10 ** places < 100 * MIB) places += 1;
    const scale = 10 ** places;
    const scaled = Math.ceil((count * scale) / MIB);
    const fraction = String(scaled % scale).padStart(places, "0");
    return `${Math.floor(scaled / scale)}.${fraction}`.replace(/\.?0+$/, "") + " MiB";
  }
  const hasWords = (code) => typeof code === "string" && Object.hasOwn(words, code);

  let running = null; // the AbortController of the request in flight
  let previewUrl = null; // the object URL of a chosen file's preview, while shown
  let wake = null; // while the model wakes up: the timers of the next try and of the bar

  // Stop showing the model's wake-up, and asking again.
  function stopWaking() {
    if (wake) {
      clearTimeout(wake.again);
      clearInterval(wake.ticker);
      wake = null;
    }
    waking.hidden = true;
    wakeHint.hidden = true;
  }

  // Stop showing the request in flight, if any: its answer will be ignored.
  function cancel() {
    running?.abort();
    running = null;
    stopWaking();
    setBusy(false);
  }

  // A refusal made here, before anything is sent: it replaces whatever was shown.
  function refuse(message, detail) {
    cancel();
    result.hidden = true;
    showError(message, detail);
  }

  function setBusy(busy) {
    activity.hidden = !busy;
    result.setAttribute("aria-busy", String(busy));
    document.body.classList.toggle("busy", busy);
  }

  function showError(message, detail) {
    const lines = [message, detail].filter(Boolean).map((text, i) => {
      const p = document.createElement("p");
      p.textContent = i === 0 ? text : `Details: ${text}`;
      if (i > 0) p.className = "detail";
      return p;
    });
    errorBox.replaceChildren(...lines);
    errorBox.hidden = false;
    status.textContent = "";
  }

  function bar([label, probability]) {
    const item = document.createElement("li");
    item.dataset.label = label;
    item.dataset.probability = String(probability);
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    const meter = document.createElement("meter");
    meter.min = 0;
    meter.max = 1;
    meter.value = probability;
    meter.setAttribute("aria-hidden", "true"); // the figure beside it says the same
    const figure = document.createElement("span");
    figure.className = "value";
    figure.textContent = percent.format(probability);
    item.append(name, meter, figure);
    return item;
  }

  // Said in words, not by colour alone: an unsure answer's heading is followed by why.
  function showUnsure(body) {
    const unsure = body.top_probability < unsureBelow;
    unsureNote.hidden = !unsure;
    if (unsure) {
      const label = document.createElement("strong");
      label.textContent = "Unsure:";
      unsureNote.replaceChildren(
        label,
        ` with only ${percent.format(body.top_probability)} for ${body.top_class}, the ` +
          "classifier finds it more likely that this is something else. See the other " +
          "classes below.",
      );
      result.setAttribute("aria-describedby", "unsure");
    } else {
      unsureNote.replaceChildren();
      result.removeAttribute("aria-describedby");
    }
    return unsure;
  }

  function showResult(body, pictureSrc) {
    const ranked = Object.entries(body.probabilities).sort((a, b) => b[1] - a[1]);
    topClass.textContent = `${body.top_class} (${percent.format(body.top_probability)})`;
    const unsure = showUnsure(body);
    modelLine.textContent = `Model ${body.model.name}, version ${body.model.version}`;
    bars.replaceChildren(...ranked.map(bar));
    preview.alt = `The picture you gave, classified as ${body.top_class}`;
    preview.src = pictureSrc;
    result.hidden = false;
    status.textContent = unsure
      ? `Done: most likely ${body.top_class}, but the classifier is unsure.`
      : `Done: most likely ${body.top_class}.`;
  }

  async function readJson(response) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }

  const isPrediction = (body) =>
    typeof body?.top_class === "string" &&
    typeof body.top_probability === "number" &&
    body.probabilities !== null &&
    typeof body.probabilities === "object" &&
    Object.values(body.probabilities).every((p) => typeof p === "number") &&
    typeof body.model?.name === "string";

  // What to say for an answer that is not the API's JSON (something in between answered).
  function wordsForStatus(status) {
    if (status === 413) return words.request_too_large;
    if (status === 401) return words.unauthorized;
    if (status === 502 || status === 503 || status === 504) return words.server_unavailable;
    return `The classifier answered with an error (HTTP ${status}). Try again.`;
  }

  // The gateway's wake progress ({estimate_s, elapsed_s}) as a bar that moves on between
  // answers, and the minutes left in the status line (changed only when they change, so
  // that a screen reader is not told every second); then the same request again.
  function showWaking(progress, seconds, again) {
    const estimate = Math.max(Number(progress?.estimate_s) || 0, 1);
    const elapsed = Number(progress?.elapsed_s) || 0;
    const since = performance.now();
    const tick = () => {
      const now = elapsed + (performance.now() - since) / 1000;
      wakeProgress.value = Math.min(now / estimate, WAKE_BAR_CAP);
      const minutes = Math.max(1, Math.ceil((estimate - now) / 60));
      const text = `Waking the model up (about ${minutes} minute${minutes === 1 ? "" : "s"})`;
      if (status.textContent !== text) status.textContent = text;
    };
    if (wake) {
      clearTimeout(wake.again);
      clearInterval(wake.ticker);
    }
    wake = { again: setTimeout(again, seconds * 1000), ticker: setInterval(tick, 1000) };
    tick();
    waking.hidden = false;
    wakeHint.hidden = false;
  }

  function retryAfter(response) {
    const seconds = Number(response.headers.get("Retry-After"));
    return Number.isFinite(seconds) && seconds > 0 ? seconds : RETRY_AFTER_S;
  }

  // One request at a time: a new one cancels the one in flight, and the wait for the model.
  // `again`: the same request, once more after the model said it was waking up.
  async function classify(init, pictureSrc, again = false) {
    running?.abort();
    const controller = new AbortController();
    running = controller;
    const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
    errorBox.hidden = true;
    result.hidden = true;
    if (!again) {
      stopWaking();
      status.textContent = "Classifying…";
      setBusy(true);
    }
    try {
      const key = keyInput?.value.trim();
      const response = await fetch("/predict", {
        method: "POST",
        ...init,
        headers: {
          Accept: "application/json",
          ...(key ? { Authorization: `Bearer ${key}` } : {}),
          ...init.headers,
        },
        signal: controller.signal,
      });
      const body = await readJson(response);
      if (controller !== running) return; // a newer request took over
      if (response.status === 503 && body?.error?.code === "model_waking") {
        showWaking(body.error.wake, retryAfter(response), () => classify(init, pictureSrc, true));
        return;
      }
      stopWaking();
      if (response.ok && isPrediction(body)) {
        showResult(body, pictureSrc);
      } else if (response.ok) {
        showError("The classifier gave an answer this page does not understand. Try again.");
      } else if (hasWords(body?.error?.code)) {
        showError(words[body.error.code], String(body.error.message ?? ""));
      } else {
        showError(wordsForStatus(response.status));
      }
      if (response.status === 401) keyInput?.focus();
    } catch {
      if (controller !== running) return;
      stopWaking();
      showError(
        controller.signal.aborted
          ? "The classifier took too long to answer. Try again."
          : "Could not reach the classifier. Check your connection and try again.",
      );
    } finally {
      clearTimeout(timer);
      if (controller === running) {
        running = null;
        setBusy(false);
      }
    }
  }

  function forgetPreview() {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
  }

  function classifyLink(link) {
    const url = link.trim();
    if (!url) {
      refuse("Give a link to a picture first.");
      urlInput.focus();
      return;
    }
    forgetPreview();
    classify(
      { headers: { "Content-Type": "application/json" }, body: JSON.stringify({ url }) },
      url,
    );
  }

  function classifyFile(file) {
    if (file.size > maxBytes) {
      refuse(words.request_too_large, `it is ${mib(file.size)}; the limit is ${maxSize}`);
      return;
    }
    forgetPreview();
    previewUrl = URL.createObjectURL(file);
    const body = new FormData();
    body.append("image", file, file.name || "picture");
    classify({ body }, previewUrl);
  }

  const firstLink = (text) =>
    (text || "")
      .split(/\r?\n/)
      .map((line) => line.trim())
      .find((line) => /^https?:\/\//i.test(line));

  // A dropped or pasted file, or a link (an image dragged from another page brings one).
  function take(transfer) {
    const files = [...(transfer?.files || [])];
    const file = files.find((f) => f.type.startsWith("image/")) || files[0];
    if (file) {
      classifyFile(file);
      return true;
    }
    const link = firstLink(transfer?.getData("text/uri-list")) || firstLink(transfer?.getData("text/plain"));
    if (link) {
      urlInput.value = link;
      classifyLink(link);
      return true;
    }
    return false;
  }

  if (keyInput) {
    keyInput.value = sessionStorage.getItem(KEY_STORE) || "";
    keyInput.addEventListener("change", () => sessionStorage.setItem(KEY_STORE, keyInput.value.trim()));
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    classifyLink(urlInput.value);
  });

  fileInput.addEventListener("change", () => {
    const [file] = fileInput.files;
    fileInput.value = ""; // choosing the same file again is a new choice
    if (file) classifyFile(file);
  });

  // Anywhere on the page takes a drop; without this the browser would open the file
  // instead. Text dropped on the link field without a file lands there, as usual.
  const intoLinkField = (event) =>
    event.target === urlInput && !event.dataTransfer?.types.includes("Files");
  document.addEventListener("dragover", (event) => {
    if (intoLinkField(event)) return;
    event.preventDefault();
    dropZone.classList.add("dragging");
  });
  document.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) dropZone.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    dropZone.classList.remove("dragging");
    if (intoLinkField(event)) return;
    event.preventDefault();
    if (!take(event.dataTransfer)) refuse("That was not a picture or a link to one.");
  });

  // A pasted picture anywhere, or a pasted link outside the link field (inside it, the
  // text is simply pasted and Classify sends it).
  document.addEventListener("paste", (event) => {
    if (event.target === urlInput && event.clipboardData?.files.length === 0) return;
    if (take(event.clipboardData)) event.preventDefault();
  });

  preview.addEventListener("error", () => {
    preview.alt = "(the picture could not be shown here)";
  });
})();
