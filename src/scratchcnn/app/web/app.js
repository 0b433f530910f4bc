// scratchcnn's page: draw on a canvas, send it to /api/predict, show what comes back.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const predictionEl = document.getElementById("prediction");
const statusEl = document.getElementById("status");
const barsEl = document.getElementById("bars");
const seen = document.getElementById("seen");
const mapsEl = document.getElementById("maps");
let classes = [];
let drawing = false;
let dirty = false;
let inFlight = false;
window.scratchcnn = { lastImage: null, lastResult: null, requests: 0 };

function clearPad() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  predictionEl.textContent = "?";
  statusEl.textContent = "";
  barsEl.querySelectorAll(".fill").forEach((f) => { f.style.width = "0"; });
  mapsEl.innerHTML = "";
  seen.getContext("2d").clearRect(0, 0, seen.width, seen.height);
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width,
          (event.clientY - box.top) * pad.height / box.height];
}

pad.addEventListener("pointerdown", (event) => {
  drawing = true;
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

// While drawing, send at most every 150 ms so the answer follows the pen.
setInterval(() => { if (drawing && dirty) send(); }, 150);

async function send(imageOverride) {
  if (inFlight) { dirty = true; return; }
  const image = imageOverride || pad.toDataURL("image/png");
  dirty = false;
  inFlight = true;
  window.scratchcnn.lastImage = image;
  try {
    const response = await fetch("/api/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image, activations: true }),
    });
    const result = await response.json();
    window.scratchcnn.requests += 1;
    if (!response.ok) {
      statusEl.textContent = result.error || `error ${response.status}`;
      predictionEl.textContent = "?";
      return;
    }
    statusEl.textContent = "";
    window.scratchcnn.lastResult = result;
    show(result);
  } catch (error) {
    statusEl.textContent = `cannot reach the server (${error})`;
  } finally {
    inFlight = false;
    if (dirty && !drawing) send();
  }
}

function buildBars() {
  barsEl.innerHTML = "";
  classes.forEach((name) => {
    const row = document.createElement("div");
    row.className = "bar";
    row.innerHTML = `<span class="label"></span><span class="track"><span class="fill"></span></span><span class="pct"></span>`;
    row.querySelector(".label").textContent = name;
    barsEl.appendChild(row);
  });
}

function show(result) {
  predictionEl.textContent = result.prediction;
  result.probabilities.forEach((p, i) => {
    const row = barsEl.children[i];
    row.classList.toggle("top", i === result.index);
    row.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    row.querySelector(".pct").textContent = `${(100 * p).toFixed(1)}%`;
  });
  drawGrey(seen, result.input.flat(), 28, 28);
  drawMaps(result.activations || []);
}

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

function decode(base64) {
  const raw = atob(base64);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
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

function drawMaps(layers) {
  mapsEl.innerHTML = "";
  layers.forEach((layer) => mapsEl.appendChild(mapGrid(`layer ${layer.index}, ${layer.layer}`, layer)));
}

document.getElementById("clear").addEventListener("click", clearPad);
document.getElementById("upload").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    const img = new Image();
    img.onload = () => {
      clearPad();
      const scale = Math.min(pad.width / img.width, pad.height / img.height);
      const w = img.width * scale, h = img.height * scale;
      ctx.drawImage(img, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    };
    img.src = reader.result;
    send(reader.result);
  };
  reader.readAsDataURL(file);
  event.target.value = "";
});

async function init() {
  ctx.lineWidth = 18;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.strokeStyle = "#000";
  clearPad();
  const info = await (await fetch("/api/model")).json();
  classes = info.classes;
  buildBars();
  const acc = info.metrics.test_accuracy;
  document.getElementById("model-line").textContent =
    `${info.architecture} network trained on ${info.dataset}, ${info.num_parameters.toLocaleString()} parameters` +
    (acc ? `, ${(100 * acc).toFixed(2)}% test accuracy` : "");
  const filters = document.getElementById("filters");
  if (info.filters) filters.appendChild(mapGrid(info.filters.layer, info.filters));
  document.body.dataset.ready = "1";
}
init();
