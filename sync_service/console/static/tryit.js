// The try-it panel: run a model version's cpu artifact with onnxruntime-web (wasm, vendored
// under vendor/onnxruntime-web/ and served by the service) on the manifest's golden vectors,
// and set its scores beside the reference model's (signed in the manifest) and the service's
// onnxruntime (GET /v1/models/{name}/versions/{v}/parity).
import * as ort from "./vendor/onnxruntime-web/ort.wasm.min.mjs";

const panel = document.getElementById("tryit");
const button = document.getElementById("tryit-run");

ort.env.wasm.wasmPaths = new URL("./vendor/onnxruntime-web/", import.meta.url).href;
// One thread: a threaded build needs cross-origin isolation (SharedArrayBuffer), and the
// golden set is a few dozen rows.
ort.env.wasm.numThreads = 1;
ort.env.logLevel = "error";

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
}

function fmt(x) {
  return Number.isFinite(x) ? x.toPrecision(7) : String(x);
}

async function score(session, check) {
  const inputs = check.inputs;
  const width = inputs[0].length;
  const fixed = Number.isInteger(check.input_shape[0]) && check.input_shape[0] > 0 ? check.input_shape[0] : 0;
  const batch = fixed || inputs.length;
  const labels = [];
  const scores = [];
  for (let start = 0; start < inputs.length; start += batch) {
    const rows = inputs.slice(start, start + batch);
    while (rows.length < batch) rows.push(rows[rows.length - 1]); // a fixed batch: pad, then trim
    const data = Float32Array.from(rows.flat());
    const out = await session.run({ [check.input_name]: new ort.Tensor("float32", data, [batch, width]) });
    const n = Math.min(batch, inputs.length - start);
    for (let i = 0; i < n; i++) {
      labels.push(Number(out.label.data[i]));
      scores.push(Number(out.score.data[i]));
    }
  }
  return { labels, scores };
}

function render(check, browser) {
  const table = document.createElement("table");
  table.id = "tryit-rows";
  const head = table.createTHead().insertRow();
  for (const h of ["row", "reference", "Python ORT", "browser (wasm)", "|browser − ref|",
                   "|browser − Python|", "label ref/Py/web"]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = h;
    head.appendChild(th);
  }
  const body = table.createTBody();
  let worstRef = 0, worstPy = 0, flips = 0;
  check.rows.forEach((r, i) => {
    const b = browser.scores[i];
    const dRef = Math.abs(b - r.reference_score);
    const dPy = Math.abs(b - r.python_score);
    worstRef = Math.max(worstRef, Number.isNaN(dRef) ? Infinity : dRef);
    worstPy = Math.max(worstPy, Number.isNaN(dPy) ? Infinity : dPy);
    if (browser.labels[i] !== r.reference_label) flips += 1;
    const tr = body.insertRow();
    cell(tr, String(i + 1), "num");
    cell(tr, fmt(r.reference_score), "num");
    cell(tr, fmt(r.python_score), "num");
    cell(tr, fmt(b), "num");
    cell(tr, dRef.toExponential(2), dRef > check.tolerance.score_atol ? "num bad" : "num");
    cell(tr, dPy.toExponential(2), "num");
    cell(tr, `${r.reference_label} / ${r.python_label} / ${browser.labels[i]}`,
         browser.labels[i] !== r.reference_label ? "bad" : "");
  });
  const ok = worstRef <= check.tolerance.score_atol && flips <= check.tolerance.max_label_mismatches;
  const summary = document.getElementById("tryit-summary");
  summary.replaceChildren();
  const table2 = document.createElement("table");
  table2.className = "compact";
  table2.id = "tryit-parity";
  const h2 = table2.createTHead().insertRow();
  for (const h of ["runtime", "max |score − reference|", "label flips", "verdict"]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = h;
    h2.appendChild(th);
  }
  const b2 = table2.createTBody();
  const py = b2.insertRow();
  py.dataset.runtime = "python";
  cell(py, `Python onnxruntime ${check.onnxruntime_version} (service)`);
  cell(py, check.max_abs_diff.toExponential(2), "num");
  cell(py, String(check.label_mismatches), "num");
  cell(py, check.within_tolerance ? "within tolerance" : "outside tolerance", check.within_tolerance ? "ok" : "bad");
  const br = b2.insertRow();
  br.dataset.runtime = "browser";
  br.dataset.maxDiff = String(worstRef);
  br.dataset.flips = String(flips);
  br.dataset.within = String(ok);
  cell(br, `onnxruntime-web ${ort.env.versions.web} (wasm, this browser)`);
  cell(br, worstRef.toExponential(2), "num");
  cell(br, String(flips), "num");
  cell(br, ok ? "within tolerance" : "outside tolerance", ok ? "ok" : "bad");
  const tol = b2.insertRow();
  cell(tol, "manifest's tolerance");
  cell(tol, `≤ ${check.tolerance.score_atol.toExponential(2)}`, "num");
  cell(tol, `≤ ${check.tolerance.max_label_mismatches}`, "num");
  cell(tol, "");
  const p = document.createElement("p");
  p.textContent = `Browser vs Python onnxruntime: max |Δ| ${worstPy.toExponential(2)} over ${check.rows.length} rows.`;
  summary.append(table2, p);
  summary.hidden = false;
  const holder = document.getElementById("tryit-table");
  holder.replaceChildren(table);
  holder.hidden = false;
  return ok;
}

async function run() {
  const state = document.getElementById("tryit-state");
  button.disabled = true;
  state.className = "";
  state.textContent = "loading the artifact and onnxruntime-web…";
  try {
    const [checkResp, artifactResp] = await Promise.all([
      fetch(panel.dataset.parity, { credentials: "same-origin" }),
      fetch(panel.dataset.artifact, { credentials: "same-origin" }),
    ]);
    if (!checkResp.ok || !artifactResp.ok) throw new Error(`the service answered ${checkResp.status} / ${artifactResp.status}`);
    const check = await checkResp.json();
    const bytes = new Uint8Array(await artifactResp.arrayBuffer());
    const started = performance.now();
    const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
    state.textContent = "scoring the golden vectors…";
    const browser = await score(session, check);
    const ms = performance.now() - started;
    await session.release();
    const ok = render(check, browser);
    state.className = ok ? "ok" : "bad";
    state.textContent = `${ok ? "Agrees" : "Disagrees"} with the manifest: ${check.rows.length} rows in ${ms.toFixed(0)} ms.`;
    panel.dataset.done = ok ? "agrees" : "disagrees";
  } catch (err) {
    state.className = "bad";
    state.textContent = `Could not run it here: ${err && err.message ? err.message : err}`;
    panel.dataset.done = "error";
  } finally {
    button.disabled = false;
  }
}

if (panel && button) button.addEventListener("click", run);
