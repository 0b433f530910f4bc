// scratchcnn's page: five tabs over the JSON API of scratchcnn serve (see server.py).
"use strict";

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ctx = pad.getContext("2d");
let classes = [];
let drawing = false;
let dirty = false;
let inFlight = false;
let current = null; // the 28x28 input of the last prediction: what explain/step/transform use
let pdf = null; // {image, page}: the PDF on the pad, and its page asked for (see readPdfPage)
window.scratchcnn = { lastImage: null, lastResult: null, requests: 0, explain: null, step: null, transform: null, train: [], tune: null, cameraFrames: 0 };

// -- small helpers ---------------------------------------------------------------------------------

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || `error ${response.status}`);
  return answer;
}

function decode(base64) {
  const raw = atob(base64);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

// Draw grey values (0-255) of width x height onto a canvas, scaled up without smoothing.
function drawGrey(canvas, values, width, height) {
  const small = document.createElement("canvas");
  small.width = width;
  small.height = height;
  const image = small.getContext("2d").createImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    const v = values[i];
    image.data[4 * i] = image.data[4 * i + 1] = image.data[4 * i + 2] = v;
    image.data[4 * i + 3] = 255;
  }
  small.getContext("2d").putImageData(image, 0, 0);
  const target = canvas.getContext("2d");
  target.imageSmoothingEnabled = false;
  target.clearRect(0, 0, canvas.width, canvas.height);
  target.drawImage(small, 0, 0, canvas.width, canvas.height);
}

// A signed map as red (positive) and blue (negative), scaled by its largest magnitude.
function drawSigned(canvas, rows, scale) {
  const height = rows.length, width = rows[0].length;
  const small = document.createElement("canvas");
  small.width = width;
  small.height = height;
  const image = small.getContext("2d").createImageData(width, height);
  const top = scale || 1e-12;
  rows.flat().forEach((v, i) => {
    const t = Math.min(1, Math.abs(v) / top);
    image.data[4 * i] = v > 0 ? 255 : 255 * (1 - t);
    image.data[4 * i + 1] = 255 * (1 - t);
    image.data[4 * i + 2] = v < 0 ? 255 : 255 * (1 - t);
    image.data[4 * i + 3] = 255;
  });
  small.getContext("2d").putImageData(image, 0, 0);
  const target = canvas.getContext("2d");
  target.imageSmoothingEnabled = false;
  target.drawImage(small, 0, 0, canvas.width, canvas.height);
}

function digitCanvas(pixels, size = 56) {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = size;
  drawGrey(canvas, pixels.flat(), 28, 28);
  return canvas;
}

// A small 28x28 digit with a caption under it (its class, or what the network reads).
function digitCell(pixels, caption, tag = "div") {
  const cell = document.createElement(tag);
  cell.className = "digit";
  cell.append(digitCanvas(pixels, 42));
  const label = document.createElement("span");
  label.className = "guess";
  label.textContent = caption;
  cell.append(label);
  return cell;
}

function mapGrid(title, block) {
  const [channels, height, width] = block.shape;
  const bytes = decode(block.data);
  const section = document.createElement("div");
  section.className = "layer";
  const heading = document.createElement("h3");
  heading.textContent = `${title}: ${channels} maps of ${height}\u00d7${width}`;
  const grid = document.createElement("div");
  grid.className = "grid";
  for (let c = 0; c < channels; c++) {
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    drawGrey(canvas, bytes.subarray(c * height * width, (c + 1) * height * width), width, height);
    grid.appendChild(canvas);
  }
  section.append(heading, grid);
  return section;
}

function bars(element, probabilities, best) {
  element.innerHTML = "";
  probabilities.forEach((p, i) => {
    const row = document.createElement("div");
    row.className = "bar" + (i === best ? " top" : "");
    row.innerHTML = '<span class="label"></span><span class="track"><span class="fill"></span></span><span class="pct"></span>';
    row.querySelector(".label").textContent = classes[i];
    row.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    row.querySelector(".pct").textContent = `${(100 * p).toFixed(1)}%`;
    element.appendChild(row);
  });
}

// -- tabs -------------------------------------------------------------------------------------------

const loaders = {};
function showTab(name) {
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll(".tab").forEach((t) => { t.hidden = t.id !== `tab-${name}`; });
  if (loaders[name]) { loaders[name](); delete loaders[name]; }
}
document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));

// -- 1. data ---------------------------------------------------------------------------------------

loaders.data = async () => {
  try {
    const data = await api("/api/data");
    $("data-status").textContent = `${data.images.toLocaleString()} training images.`;
    const most = Math.max(...data.counts);
    $("data-counts").innerHTML = "";
    data.counts.forEach((n, k) => {
      const bar = document.createElement("div");
      bar.className = "count";
      bar.innerHTML = `<span class="colbar" style="height:${(100 * n / most).toFixed(0)}px"></span><span>${classes[k]}</span><span class="muted">${n.toLocaleString()}</span>`;
      $("data-counts").appendChild(bar);
    });
    $("data-samples").innerHTML = "";
    data.samples.forEach((row, k) => {
      const line = document.createElement("div");
      line.className = "digit-row";
      const label = document.createElement("span");
      label.textContent = classes[k];
      line.appendChild(label);
      row.forEach((pixels) => line.appendChild(digitCanvas(pixels, 42)));
      $("data-samples").appendChild(line);
    });
    $("data-averages").innerHTML = "";
    data.averages.forEach((pixels) => $("data-averages").appendChild(digitCanvas(pixels, 56)));
    const p = data.pixels;
    $("data-pixels").textContent = `mean ${p.mean.toFixed(4)}, standard deviation ${p.std.toFixed(4)} (of pixels scaled to [0, 1]; the network subtracts and divides by these); ${(100 * p.ink_share).toFixed(1)}% of pixels are ink (above half brightness).`;
  } catch (error) {
    $("data-status").textContent = `The dataset is not available to the server: ${error.message}. Start it with --data-dir.`;
  }
};

// -- 2. train ----------------------------------------------------------------------------------------

let curve = [];
let gridDigits = [];
function setTrainButtons(state) {
  $("train-start").disabled = state === "running";
  $("train-stop").disabled = state !== "running";
  $("train-resume").disabled = state !== "stopped";
  $("train-use").disabled = state !== "done";
  $("train-download").hidden = state !== "done";
}

function drawChart() {
  const canvas = $("train-chart");
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, left = 36, bottom = 22;
  g.clearRect(0, 0, w, h);
  g.strokeStyle = "#c9d0dd";
  g.strokeRect(left, 4, w - left - 4, h - bottom - 4);
  g.fillStyle = "#5d6678";
  g.font = "11px sans-serif";
  const xs = curve.map((p) => p.epoch);
  const maxEpoch = Math.max(1, ...xs);
  const maxLoss = Math.max(0.5, ...curve.filter((p) => p.loss !== undefined).map((p) => p.loss));
  g.fillText("0", 4, h - bottom);
  g.fillText(`${maxEpoch.toFixed(1)} epochs`, w - 70, h - 6);
  const X = (e) => left + (w - left - 8) * e / maxEpoch;
  const Y = (v) => 4 + (h - bottom - 8) * (1 - v);
  const line = (points, colour) => {
    g.strokeStyle = colour;
    g.lineWidth = 2;
    g.beginPath();
    points.forEach(([e, v], i) => (i ? g.lineTo(X(e), Y(v)) : g.moveTo(X(e), Y(v))));
    g.stroke();
  };
  line(curve.filter((p) => p.loss !== undefined).map((p) => [p.epoch, p.loss / maxLoss]), "#d6452f");
  line(curve.filter((p) => p.accuracy !== undefined).map((p) => [p.epoch, p.accuracy]), "#2f6fd6");
  line(curve.filter((p) => p.val_accuracy !== undefined).map((p) => [p.epoch, p.val_accuracy]), "#2a9d4b");
}

function showSnapshot(event) {
  if (event.filters) {
    const grid = $("train-filters");
    grid.innerHTML = "";
    const flat = event.filters.flat(2);
    const top = Math.max(...flat.map(Math.abs)) || 1;
    event.filters.forEach((kernel) => {
      const canvas = document.createElement("canvas");
      canvas.width = canvas.height = 42;
      drawGrey(canvas, kernel.flat().map((v) => 127.5 + 127.5 * v / top), kernel[0].length, kernel.length);
      grid.appendChild(canvas);
    });
  }
  if (event.grid) {
    [...$("train-grid").children].forEach((cell, i) => {
      const guess = event.grid[i];
      cell.querySelector(".guess").textContent = classes[guess];
      cell.classList.toggle("right", guess === gridDigits[i].label);
      cell.classList.toggle("wrong", guess !== gridDigits[i].label);
    });
  }
}

function listen(since) {
  const source = new EventSource(`/api/train/events?since=${since}`);
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    window.scratchcnn.train.push(event);
    if (event.kind === "progress") {
      curve.push({ epoch: event.epoch, loss: event.loss, accuracy: event.accuracy });
      $("train-speed").textContent = `${Math.round(event.images_per_second).toLocaleString()} images/s`;
    }
    if (event.kind === "probe" || event.kind === "epoch") curve.push({ epoch: event.epoch, val_accuracy: event.val_accuracy });
    if (event.kind === "probe" || event.kind === "done") showSnapshot(event);
    drawChart();
    const last = curve.filter((p) => p.val_accuracy !== undefined).slice(-1)[0];
    $("train-status").textContent = `${event.state}` + (last ? `: validation accuracy ${(100 * last.val_accuracy).toFixed(2)}%` : "") + (event.error ? ` (${event.error})` : "");
    setTrainButtons(event.state);
    if (["done", "stopped", "failed"].includes(event.kind)) source.close();
  };
  source.onerror = () => source.close();
}

$("train-start").addEventListener("click", async () => {
  try {
    const session = await api("/api/train/start", {
      recipe: $("train-recipe").value, images: Number($("train-images").value), lr: Number($("train-lr").value),
    });
    curve = [];
    window.scratchcnn.train = [];
    gridDigits = session.grid;
    $("train-grid").innerHTML = "";
    gridDigits.forEach((digit) => $("train-grid").append(digitCell(digit.image, "?")));
    $("train-status").textContent = "running";
    setTrainButtons("running");
    listen(0);
  } catch (error) { $("train-status").textContent = error.message; }
});
$("train-stop").addEventListener("click", () => api("/api/train/stop", {}).catch((e) => { $("train-status").textContent = e.message; }));
$("train-resume").addEventListener("click", async () => {
  try {
    await api("/api/train/resume", {});
    setTrainButtons("running");
    listen(window.scratchcnn.train.length);
  } catch (error) { $("train-status").textContent = error.message; }
});
$("train-use").addEventListener("click", async () => {
  try {
    await api("/api/train/use", {});
    await loadModel();
    $("train-status").textContent = "the page now predicts with the network you trained";
  } catch (error) { $("train-status").textContent = error.message; }
});

// -- 3. evaluate ------------------------------------------------------------------------------------

$("evaluate-run").addEventListener("click", async () => {
  $("evaluate-status").textContent = "evaluating\u2026";
  try {
    const result = await api("/api/evaluate");
    $("evaluate-status").textContent = `accuracy ${(100 * result.accuracy).toFixed(2)}% on 10,000 test images`;
    const table = $("confusion");
    table.innerHTML = "";
    const top = Math.max(...result.confusion.flat());
    const head = table.insertRow();
    head.insertCell().textContent = "";
    classes.forEach((c) => { head.insertCell().textContent = c; });
    result.confusion.forEach((row, i) => {
      const tr = table.insertRow();
      tr.insertCell().textContent = classes[i];
      row.forEach((n, j) => {
        const cell = tr.insertCell();
        cell.textContent = n;
        const t = Math.log1p(n) / Math.log1p(top);
        cell.style.background = i === j ? `rgba(47,111,214,${t})` : n ? `rgba(214,69,47,${0.15 + 0.85 * t})` : "";
      });
    });
    $("mistakes").innerHTML = "";
    result.mistakes.forEach((m) => {
      const cell = digitCell(m.image, `${classes[m.predicted]}\u2260${classes[m.label]}`, "button");
      cell.classList.add("wrong");
      cell.title = `true ${classes[m.label]}, read as ${classes[m.predicted]} (${(100 * m.confidence).toFixed(0)}%)`;
      cell.addEventListener("click", () => { showTab("draw"); inspect(m.image); });
      $("mistakes").append(cell);
    });
  } catch (error) { $("evaluate-status").textContent = error.message; }
});

// -- 4. draw, predict and explain ----------------------------------------------------------------------

function clearPad() {
  pdf = null;
  $("pdf-pager").hidden = true;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  $("prediction").textContent = "?";
  $("status").textContent = "";
  $("unsure").hidden = true;
  document.querySelectorAll("#bars .fill").forEach((f) => { f.style.width = "0"; });
  $("maps").innerHTML = "";
  $("seen").getContext("2d").clearRect(0, 0, 140, 140);
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
}
pad.addEventListener("pointerdown", (event) => {
  drawing = true;
  pdf = null; // a stroke on a PDF's page: the pad is a drawing now
  $("pdf-pager").hidden = true;
  pad.setPointerCapture(event.pointerId);
  const [x, y] = point(event);
  ctx.beginPath();
  ctx.moveTo(x, y);
  ctx.lineTo(x + 0.1, y + 0.1);
  ctx.stroke();
  dirty = true;
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const [x, y] = point(event);
  ctx.lineTo(x, y);
  ctx.stroke();
  dirty = true;
});
function endStroke() {
  if (!drawing) return;
  drawing = false;
  dirty = true;
  send();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);
setInterval(() => { if (drawing && dirty) send(); }, 150); // the answer follows the pen

async function send(imageOverride, pageNumber) {
  if (inFlight) { dirty = true; return; }
  const image = imageOverride || pad.toDataURL("image/png");
  dirty = false;
  inFlight = true;
  window.scratchcnn.lastImage = image;
  const request = { image, activations: true };
  if (pageNumber) request.page_number = pageNumber;
  try {
    const response = await fetch("/api/predict", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request),
    });
    const result = await response.json();
    window.scratchcnn.requests += 1;
    if (!response.ok) {
      $("status").textContent = result.error || `error ${response.status}`;
      $("prediction").textContent = "?";
      return;
    }
    $("status").textContent = "";
    window.scratchcnn.lastResult = result;
    show(result);
  } catch (error) {
    $("status").textContent = `cannot reach the server (${error})`;
  } finally {
    inFlight = false;
    if (dirty && !drawing) send();
  }
}

function show(result) {
  $("prediction").textContent = result.prediction;
  $("unsure").hidden = !result.unsure;
  bars($("bars"), result.probabilities, result.index);
  drawGrey($("seen"), result.input.flat(), 28, 28);
  if (result.page) { // a PDF's page
    loadImage(result.page).then(fitOnPad, () => {});
    showPager(result);
  }
  $("maps").innerHTML = "";
  (result.activations || []).forEach((layer) => $("maps").appendChild(mapGrid(`layer ${layer.index}, ${layer.layer}`, layer)));
  current = result.input;
  $("tune-add").disabled = false;
  $("explain-class").value = String(result.index);
  $("step-label").value = String(result.index);
  refreshViews();
}

// Look at one 28x28 digit (a mistake from the Evaluate tab): predict it and explain it.
async function inspect(pixels) {
  current = pixels;
  $("tune-add").disabled = false;
  clearPad();
  drawGrey($("seen"), pixels.flat(), 28, 28);
  const answer = await api("/api/transform", { pixels });
  const best = answer.probabilities.indexOf(Math.max(...answer.probabilities));
  $("prediction").textContent = answer.prediction;
  $("unsure").hidden = !answer.unsure;
  bars($("bars"), answer.probabilities, best);
  $("explain-class").value = String(best);
  refreshViews();
}

let viewTimer = null;
function refreshViews() {
  clearTimeout(viewTimer);
  viewTimer = setTimeout(() => { explainCurrent(); transformCurrent(); }, 200);
}

async function explainCurrent() {
  if (!current) return;
  try {
    const result = await api("/api/explain", { pixels: current, class: Number($("explain-class").value) });
    window.scratchcnn.explain = result;
    drawSigned($("saliency"), result.saliency.values, result.saliency.max);
    $("gradcam").innerHTML = "";
    result.grad_cam.forEach((cam) => {
      const figure = document.createElement("figure");
      const canvas = document.createElement("canvas");
      canvas.width = canvas.height = 112;
      drawSigned(canvas, cam.values, cam.max);
      const caption = document.createElement("figcaption");
      caption.textContent = cam.layer;
      figure.append(canvas, caption);
      $("gradcam").append(figure);
    });
    showMasks(result);
  } catch (error) { $("status").textContent = error.message; }
}

function showMasks(result) {
  $("masks").innerHTML = "";
  result.pool_masks.forEach((m) => {
    const [channels, height, width] = m.mask.shape;
    const c = Math.min(Number($("mask-channel").value) || 0, channels - 1);
    const figure = document.createElement("figure");
    [m.input, m.mask].forEach((block) => {
      const canvas = document.createElement("canvas");
      canvas.width = canvas.height = 112;
      drawGrey(canvas, decode(block.data).subarray(c * height * width, (c + 1) * height * width), width, height);
      figure.append(canvas);
    });
    const caption = document.createElement("figcaption");
    caption.textContent = `${m.layer}, channel ${c}: feature map and binary mask`;
    figure.append(caption);
    $("masks").append(figure);
  });
}
$("explain-class").addEventListener("change", explainCurrent);
$("mask-channel").addEventListener("change", () => window.scratchcnn.explain && showMasks(window.scratchcnn.explain));

$("step-run").addEventListener("click", async () => {
  if (!current) return;
  try {
    const result = await api("/api/step", { pixels: current, label: Number($("step-label").value), lr: Number($("step-lr").value) });
    window.scratchcnn.step = result;
    $("step-loss").textContent = `cross-entropy loss ${result.loss.toFixed(4)} \u2192 ${result.loss_after.toFixed(4)} after one step`;
    bars($("step-before"), result.before, result.label);
    bars($("step-after"), result.after, result.label);
    const table = $("step-layers");
    table.innerHTML = "<tr><th>layer</th><th>|dL/dW| (kernel loss)</th><th>|update|</th><th>|W|</th></tr>";
    result.layers.forEach((layer) => {
      const row = table.insertRow();
      [layer.layer, layer.grad_norm.toExponential(3), layer.update_norm.toExponential(3), layer.weight_norm.toFixed(3)]
        .forEach((text) => { row.insertCell().textContent = text; });
    });
    $("step-maps").innerHTML = "";
    result.layers.filter((l) => l.grad_maps).forEach((layer) => {
      $("step-maps").append(mapGrid(`${layer.layer}, dL/dW of each kernel (first input channel)`, layer.grad_maps));
    });
  } catch (error) { $("step-loss").textContent = error.message; }
});

async function transformCurrent() {
  if (!current) return;
  try {
    const result = await api("/api/transform", {
      pixels: current, rotate: Number($("rob-rotate").value), scale: Number($("rob-scale").value) / 100,
      dx: Number($("rob-dx").value), dy: Number($("rob-dy").value), thickness: Number($("rob-thickness").value),
      noise: Number($("rob-noise").value) / 100,
    });
    window.scratchcnn.transform = result;
    drawGrey($("rob-image"), result.input.flat(), 28, 28);
    $("rob-answer").textContent = result.unsure ? `unsure (maybe ${result.prediction})` : `reads ${result.prediction}`;
    $("rob-answer").classList.toggle("unsure", result.unsure);
    bars($("rob-bars"), result.probabilities, result.probabilities.indexOf(Math.max(...result.probabilities)));
  } catch (error) { $("rob-answer").textContent = error.message; }
}
document.querySelectorAll(".sliders input").forEach((s) => s.addEventListener("input", transformCurrent));

// Photos (an upload or a camera picture): one digit, or (ticked) a whole number whose digits are boxed.
$("clear").addEventListener("click", clearPad);
function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the picture could not be shown"));
    img.src = src;
  });
}
function fitOnPad(img) { // a photo, or a PDF's page, on white, as large as the pad allows
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  const scale = Math.min(pad.width / img.width, pad.height / img.height);
  const w = img.width * scale, h = img.height * scale;
  ctx.drawImage(img, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
}
// A scan as a PDF: the server reads one page of it, the first to begin with. A browser draws no
// PDF in an <img>, so the answer brings the page as the server read it ("page"), drawn when it
// comes, and how many pages there are ("pages"): "Next page" asks for the next one.
function readPdfPage() {
  const asked = pdf;
  clearPad(); // which forgets the PDF: the pad is about to show its page
  pdf = asked;
  if ($("number-mode").checked) readNumber(pdf.image, null, pdf.page); else send(pdf.image, pdf.page);
}
function showPager(answer) {
  if (!pdf) return;
  $("pdf-pager").hidden = answer.pages < 2;
  $("pdf-page").textContent = `page ${answer.page_number} of ${answer.pages}`;
  $("pdf-prev").disabled = answer.page_number <= 1;
  $("pdf-next").disabled = answer.page_number >= answer.pages;
}
$("pdf-prev").addEventListener("click", () => { if (pdf) { pdf.page -= 1; readPdfPage(); } });
$("pdf-next").addEventListener("click", () => { if (pdf) { pdf.page += 1; readPdfPage(); } });
function readPhoto(image) {
  if (image.startsWith("data:application/pdf")) {
    pdf = { image, page: 1 };
    readPdfPage();
    return;
  }
  loadImage(image).then((img) => {
    clearPad();
    fitOnPad(img);
    if ($("number-mode").checked) readNumber(image, img);
  }, (error) => { $("status").textContent = error.message; });
  if (!$("number-mode").checked) send(image);
}
$("upload").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => readPhoto(reader.result);
  reader.readAsDataURL(file);
  event.target.value = "";
});

// The camera: its live picture, and "Read this picture" sends the frame shown as a photo.
// Browsers lend a page the camera only on a secure origin: http://127.0.0.1 or localhost, or https.
let camera = null; // the MediaStream while the camera is on
$("camera-start").addEventListener("click", async () => {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    $("status").textContent = "This browser lends the camera only to a page at http://127.0.0.1, localhost or https: upload a photo instead.";
    return;
  }
  stopCamera(); // a second click starts it afresh, not a second stream
  try {
    camera = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
  } catch (error) {
    $("status").textContent = `The camera did not start (${error.name}): upload a photo instead.`;
    return;
  }
  $("camera-video").srcObject = camera;
  $("camera").hidden = false;
  $("status").textContent = "";
});
$("camera-read").addEventListener("click", () => {
  const video = $("camera-video");
  if (!video.videoWidth) { $("status").textContent = "The camera has no picture yet."; return; }
  // At most 1600 pixels a side, as a JPEG: a 4K camera's frame would be over the server's
  // limits on pixels and bytes, and a digit needs far fewer.
  const scale = Math.min(1, 1600 / Math.max(video.videoWidth, video.videoHeight));
  const frame = document.createElement("canvas");
  frame.width = Math.round(video.videoWidth * scale);
  frame.height = Math.round(video.videoHeight * scale);
  frame.getContext("2d").drawImage(video, 0, 0, frame.width, frame.height);
  window.scratchcnn.cameraFrames += 1;
  readPhoto(frame.toDataURL("image/jpeg", 0.92));
});
function stopCamera() {
  if (camera) camera.getTracks().forEach((track) => track.stop());
  camera = null;
  $("camera-video").srcObject = null;
  $("camera").hidden = true;
}
$("camera-stop").addEventListener("click", stopCamera);

async function readNumber(image, img, pageNumber) {
  try {
    const request = { image, number: true };
    if (pageNumber) request.page_number = pageNumber;
    const reading = await api("/api/predict", request);
    window.scratchcnn.reading = reading;
    const canvas = $("number-canvas");
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, canvas.width, canvas.height);
    $("number-text").textContent = reading.rows.map((r) => r.text).join(" / ");
    $("number-result").hidden = false;
    if (!img) { // a PDF: the page the server read, on the pad as a photo would be
      img = await loadImage(reading.page);
      fitOnPad(img);
      showPager(reading);
    }
    const scale = Math.min(canvas.width / img.width, canvas.height / img.height);
    g.drawImage(img, 0, 0, img.width * scale, img.height * scale);
    g.lineWidth = 2;
    g.font = "14px sans-serif";
    reading.rows.forEach((row) => row.digits.forEach((d) => {
      g.strokeStyle = g.fillStyle = d.unsure ? "#e67800" : "#00a03c";
      const [l, t, r, b] = d.box.map((v) => v * scale);
      g.strokeRect(l, t, r - l, b - t);
      g.fillText(d.unsure ? `${d.digit}?` : d.digit, l, Math.max(12, t - 2));
    }));
  } catch (error) { $("status").textContent = error.message; }
}

// -- teaching it your handwriting (POST /api/tune) -------------------------------------------------

const examples = []; // {pixels, label}: each digit as the network saw it, and what it really is

function showExamples() {
  const counts = classes.map((c, i) => [c, examples.filter((e) => e.label === i).length]).filter(([, n]) => n);
  $("tune-count").textContent = examples.length
    ? `${examples.length} example(s): ${counts.map(([c, n]) => `${n} \u00d7 ${c}`).join(", ")}`
    : "No examples yet.";
  $("tune-examples").innerHTML = "";
  examples.forEach((example) => $("tune-examples").append(digitCell(example.pixels, classes[example.label])));
  $("tune-run").disabled = $("tune-forget").disabled = examples.length === 0;
}

const percentOf = (value) => (value === null ? "-" : `${(100 * value).toFixed(1)}%`);

$("tune-add").addEventListener("click", () => {
  if (!current) return;
  examples.push({ pixels: current, label: Number($("tune-label").value) });
  showExamples();
});
$("tune-forget").addEventListener("click", () => { examples.length = 0; showExamples(); });
$("tune-run").addEventListener("click", async () => {
  $("tune-status").textContent = "teaching\u2026 (about a minute)";
  $("tune-run").disabled = true;
  try {
    const answer = await api("/api/tune", { examples });
    window.scratchcnn.tune = answer;
    const r = answer.report;
    const held = r.held_out
      ? `Your ${r.held_out} example(s) kept aside: ${percentOf(r.before.held_out)} read right before, ${percentOf(r.after.held_out)} after.`
      : "None was kept aside to measure it: add two or more of a digit for that.";
    $("tune-status").textContent = `Taught in ${r.seconds.toFixed(1)} s on ${r.trained_on} of your examples and ` +
      `${r.dataset_samples.toLocaleString()} training images. ${held} Its validation images: ` +
      `${percentOf(r.before.validation)} before, ${percentOf(r.after.validation)} after. The page now predicts with the taught network.`;
    $("tune-undo").disabled = false;
    $("tune-download").hidden = false;
    await loadModel();
  } catch (error) {
    $("tune-status").textContent = error.message;
  } finally {
    $("tune-run").disabled = examples.length === 0;
  }
});
$("tune-undo").addEventListener("click", async () => {
  try {
    await api("/api/tune/undo", {});
    $("tune-undo").disabled = true;
    $("tune-download").hidden = true;
    $("tune-status").textContent = "The page predicts with the network from before the teaching again.";
    await loadModel();
  } catch (error) { $("tune-status").textContent = error.message; }
});

// -- 5. inside the network, and start-up -----------------------------------------------------------

async function loadModel() {
  const info = await api("/api/model");
  classes = info.classes;
  const acc = info.metrics.test_accuracy;
  $("model-line").textContent = `${info.architecture} network trained on ${info.dataset}, ${info.num_parameters.toLocaleString()} parameters` +
    (acc ? `, ${(100 * acc).toFixed(2)}% test accuracy` : "") + (info.tuned ? ", taught your handwriting" : "");
  bars($("bars"), classes.map(() => 0), -1);
  ["explain-class", "step-label", "tune-label"].forEach((id) => {
    $(id).innerHTML = classes.map((c, i) => `<option value="${i}">${c}</option>`).join("");
  });
  const table = $("layer-table");
  table.innerHTML = "<tr><th>layer</th><th>output shape</th><th>parameters</th></tr>";
  info.layers.forEach((layer) => {
    const row = table.insertRow();
    [layer.name, `(${layer.output_shape.join(", ")})`, layer.params ? layer.params.toLocaleString() : "-"].forEach((t) => { row.insertCell().textContent = t; });
  });
  $("filters").innerHTML = "";
  if (info.filters) $("filters").appendChild(mapGrid(info.filters.layer, info.filters));
}

async function init() {
  ctx.lineWidth = 18;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.strokeStyle = "#000";
  clearPad();
  await loadModel();
  document.body.dataset.ready = "1";
}
init();
