// The four views of the dashboard: jobs list, job page, files list, playground. Each view builds its DOM from
// /v1 answers (text only: nothing from the API is parsed as HTML) and returns a function that stops its polling.

import { api, firstLine, listAll, CHAT_TIMEOUT_MS } from "./api.js";
import { lineChart } from "./chart.js";

export const STATUS_ZH = {
  validating_files: "校验文件", queued: "排队中", running: "训练中", paused: "已暂停",
  succeeded: "成功", failed: "失败", cancelled: "已取消",
};
const ACTIVE = ["validating_files", "queued", "running", "paused"];
const PAUSABLE = ["queued", "running"];
const JOBS_POLL_MS = 5000, JOB_POLL_MS = 1500, IDLE_POLL_MS = 5000;
// The curves of notebook 06 (helpers/plots.py CURVES): full validation is its own series, as 06 draws it.
const LOSS_SERIES = [
  { name: "train_loss", label: "训练损失（每步一个批次）", color: "#4C72B0", style: "line" },
  { name: "valid_loss", label: "批次验证损失（一个批次）", color: "#DD8452", style: "dots" },
  { name: "full_valid_loss", label: "完整验证集损失（每轮末）", color: "#C44E52", style: "line-squares" },
];
const ACCURACY_SERIES = [
  { name: "train_mean_token_accuracy", label: "训练词元准确率", color: "#4C72B0", style: "line" },
  { name: "valid_mean_token_accuracy", label: "批次验证词元准确率（一个批次）", color: "#DD8452", style: "dots" },
  { name: "full_valid_mean_token_accuracy", label: "完整验证集词元准确率（每轮末）", color: "#C44E52", style: "line-squares" },
];
// Notebook 07's decoding: greedy (temperature 0), a fixed seed, a token budget, frequency_penalty 0 (its exercise: 0.5).
const DECODING = { temperature: 0, max_tokens: 256, seed: 42, frequency_penalty: 0 };
const EXAMPLE_QUESTION = "我在体检是正常的，但是去献血医生最是说我的血压高，不能献。血压是130、80这是为什么呢？";

/** An element with attributes and children (strings become text nodes, never HTML). */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

export function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString("zh-CN", { hour12: false }) : "—";
}

function size(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  const units = ["B", "KB", "MB", "GB"];
  let v = bytes, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i ? `${v.toFixed(1)} ${units[i]}` : `${v} B`;
}

function badge(status) {
  return h("span", { class: `badge ${status}`, "data-status": status }, `${STATUS_ZH[status] || status}（${status}）`);
}

function num(v, digits = 4) {
  return typeof v === "number" ? (Number.isInteger(v) ? v.toLocaleString("en-US") : v.toFixed(digits)) : "—";
}

function errorLine(err) {
  return h("p", { class: "error", role: "alert" }, `出错了：${err.message}`);
}

/** A loop that calls `fn` every `delay()` ms until stopped; errors go to `onError` (a 401 stops it). */
function poller(fn, delay, onError) {
  let timer = null, stopped = false;
  const tick = async () => {
    try { await fn(); } catch (err) { onError(err); if (err.status === 401) return; }
    if (!stopped) timer = setTimeout(tick, delay());
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

// ------------------------------------------------------------------------------------------------ jobs list
export function jobsView(root, ctx) {
  let filter = sessionStorage.getItem("dashboard-job-filter") || "";
  const select = h("select", { id: "status-filter", "aria-label": "按状态筛选" });
  const body = h("tbody");
  const note = h("span", { class: "muted" });
  const status = h("div");
  root.append(
    h("h2", {}, "微调作业（fine-tuning jobs）"),
    h("div", { class: "toolbar" }, h("label", {}, "状态（status）：", select), note),
    status,
    h("table", { id: "jobs" },
      h("thead", {}, h("tr", {}, h("th", {}, "作业 ID"), h("th", {}, "状态 status"), h("th", {}, "基础模型 model"),
        h("th", {}, "后缀 suffix"), h("th", {}, "创建时间 created_at"), h("th", { class: "num" }, "训练词元 trained_tokens"),
        h("th", {}, "微调后的模型 fine_tuned_model"))),
      body));
  let jobs = [];
  select.addEventListener("change", () => { filter = select.value; sessionStorage.setItem("dashboard-job-filter", filter); draw(); });

  function draw() {
    const counts = {};
    for (const j of jobs) counts[j.status] = (counts[j.status] || 0) + 1;
    select.replaceChildren(h("option", { value: "" }, `全部（${jobs.length}）`),
      ...Object.keys(STATUS_ZH).map(s => h("option", { value: s }, `${STATUS_ZH[s]} ${s}（${counts[s] || 0}）`)));
    select.value = filter;
    const shown = jobs.filter(j => !filter || j.status === filter);
    note.textContent = `显示 ${shown.length} 个作业，每 ${JOBS_POLL_MS / 1000} 秒刷新`;
    body.replaceChildren(...shown.map(j => h("tr", { class: "clickable", "data-job": j.id, onclick: () => ctx.go(`#/jobs/${j.id}`) },
      h("td", { class: "mono" }, h("a", { href: `#/jobs/${j.id}` }, j.id)), h("td", {}, badge(j.status)), h("td", {}, j.model),
      h("td", {}, j.user_provided_suffix || "—"), h("td", {}, when(j.created_at)),
      h("td", { class: "num" }, num(j.trained_tokens)), h("td", { class: "mono" }, j.fine_tuned_model || "—"))));
    if (!shown.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, jobs.length ? "没有这个状态的作业。" : "还没有作业。第 05 节会创建一个。")));
  }
  return poller(async () => {
    jobs = await listAll("/fine_tuning/jobs");
    status.replaceChildren();
    draw();
  }, () => JOBS_POLL_MS, err => { status.replaceChildren(errorLine(err)); ctx.onError(err); });
}

// ------------------------------------------------------------------------------------------------ job page
export function jobView(root, ctx, jobId) {
  const seen = new Set();
  const events = [];                 // oldest first
  const metrics = new Map();         // step -> the `metrics` event's data
  const fileCache = new Map();
  let job = null, checkpoints = [];

  const title = h("h2", {}, "作业 ", h("span", { class: "mono" }, jobId), " ", h("span", { id: "job-status" }));
  const buttons = {
    pause: h("button", { id: "pause", type: "button", onclick: () => act("pause") }, "暂停（pause）"),
    resume: h("button", { id: "resume", type: "button", onclick: () => act("resume") }, "继续（resume）"),
    cancel: h("button", { id: "cancel", type: "button", class: "danger", onclick: () => act("cancel") }, "取消（cancel）"),
  };
  const playground = h("a", { href: `#/playground/${encodeURIComponent(jobId)}` }, "在试验场里比较 →");
  const message = h("div");
  const progressText = h("span", { class: "muted", id: "progress-text" });
  const bar = h("div");
  const summary = h("dl", { class: "kv", id: "summary" });
  const hyper = h("dl", { class: "kv", id: "hyperparameters" });
  const filesBox = h("tbody");
  const lossChart = h("div", { id: "loss-chart" });
  const accChart = h("div", { id: "accuracy-chart" });
  const ckptBody = h("tbody");
  const eventList = h("ol", { class: "events", id: "events", reversed: true });
  root.append(
    h("p", {}, h("a", { href: "#/jobs" }, "← 所有作业")), title,
    h("div", { class: "toolbar" }, buttons.pause, buttons.resume, buttons.cancel, playground, progressText),
    h("div", { class: "progress" }, bar), message,
    h("div", { class: "grid2" },
      h("div", { class: "panel" }, h("h3", {}, "概况"), summary),
      h("div", { class: "panel" }, h("h3", {}, "超参数（hyperparameters）"), hyper,
        h("h3", {}, "文件（files）"), h("table", { id: "job-files" }, h("thead", {}, h("tr", {}, h("th", {}, "用途"), h("th", {}, "文件"),
          h("th", { class: "num" }, "大小"))), filesBox))),
    h("div", { class: "grid2" },
      h("div", { class: "panel" }, h("h3", {}, "损失（loss）"), lossChart),
      h("div", { class: "panel" }, h("h3", {}, "词元准确率（token accuracy）"), accChart)),
    h("h3", {}, "检查点（checkpoints）"),
    h("table", { id: "checkpoints" }, h("thead", {}, h("tr", {}, h("th", { class: "num" }, "步 step"), h("th", {}, "检查点模型 fine_tuned_model_checkpoint"),
      h("th", { class: "num" }, "train_loss"), h("th", { class: "num" }, "valid_loss"), h("th", { class: "num" }, "full_valid_loss"),
      h("th", { class: "num" }, "full_valid_mean_token_accuracy"), h("th", {}, ""))), ckptBody),
    h("h3", {}, "事件（events），最新的在上面"), eventList);

  async function act(what) {
    if (what === "cancel" && !window.confirm(`取消作业 ${jobId}？取消后不能继续。`)) return;
    message.replaceChildren();
    Object.values(buttons).forEach(b => { b.disabled = true; });
    try {
      job = await api(`/fine_tuning/jobs/${jobId}/${what}`, { method: "POST" });
      await refresh();
    } catch (err) {
      message.replaceChildren(errorLine(err));
      ctx.onError(err);
      drawButtons();
    }
  }

  async function pullEvents() {
    const fresh = [];
    let after = null;
    for (let page = 0; page < 100; page++) {
      const cursor = after ? `&after=${encodeURIComponent(after)}` : "";
      const res = await api(`/fine_tuning/jobs/${jobId}/events?limit=100${cursor}`);
      let known = false;
      for (const e of res.data) {
        if (seen.has(e.id)) { known = true; break; }
        fresh.push(e);
      }
      if (known || !res.has_more || !res.data.length) break;
      after = res.data[res.data.length - 1].id;
    }
    for (const e of fresh.reverse()) {
      seen.add(e.id);
      events.push(e);
      const data = e.data || {};
      if (e.type === "metrics" && typeof data.step === "number") metrics.set(data.step, data);
      if (/resumed from step/.test(e.message) && typeof data.step === "number") {
        for (const step of [...metrics.keys()]) if (step > data.step) metrics.delete(step);  // trained again, as the server does
      }
    }
    return fresh.length;
  }

  async function fileRow(role, id) {
    if (!fileCache.has(id)) {
      try { fileCache.set(id, await api(`/files/${id}`)); } catch (err) { if (err.status === 401) throw err; fileCache.set(id, { id, filename: `（${err.message}）` }); }
    }
    const f = fileCache.get(id);
    return h("tr", {}, h("td", {}, role), h("td", {}, f.filename, h("br"), h("span", { class: "mono muted" }, id)),
      h("td", { class: "num", title: f.bytes !== undefined ? `${f.bytes} bytes` : null }, size(f.bytes)));
  }

  function drawButtons() {
    const s = job ? job.status : "";
    buttons.pause.disabled = !PAUSABLE.includes(s);
    buttons.resume.disabled = s !== "paused";
    buttons.cancel.disabled = !ACTIVE.includes(s);
  }

  function series(spec) {
    const byStep = new Map([...metrics.entries()].map(([step, d]) => [step, { ...d }]));
    for (const c of checkpoints) {  // 06 merges the checkpoints' full validation metrics by step the same way
      const d = byStep.get(c.step_number) || { step: c.step_number };
      for (const k of ["full_valid_loss", "full_valid_mean_token_accuracy"]) if (d[k] === undefined && c.metrics[k] !== undefined) d[k] = c.metrics[k];
      byStep.set(c.step_number, d);
    }
    return spec.map(s => ({ ...s, points: [...byStep.values()].filter(d => typeof d[s.name] === "number").map(d => [d.step, d[s.name]]) }));
  }

  async function draw() {
    document.getElementById("job-status").replaceChildren(badge(job.status));
    drawButtons();
    const last = [...metrics.values()].reduce((a, d) => (!a || d.step > a.step ? d : a), null);
    const total = last ? last.total_steps : null;
    const step = last ? last.step : 0;
    bar.style.width = total ? `${Math.min(100, 100 * step / total)}%` : (job.status === "succeeded" ? "100%" : "0%");
    progressText.textContent = total ? `第 ${step} / ${total} 步` : "";
    const hp = (job.method && job.method.supervised && job.method.supervised.hyperparameters) || job.hyperparameters || {};
    summary.replaceChildren(...[
      ["状态 status", badge(job.status)], ["基础模型 model", job.model], ["微调后的模型 fine_tuned_model", job.fine_tuned_model || "—"],
      ["后缀 suffix", job.user_provided_suffix || "—"], ["方法 method", (job.method && job.method.type) || "supervised"],
      ["创建 created_at", when(job.created_at)], ["完成 finished_at", when(job.finished_at)],
      ["预计完成 estimated_finish", when(job.estimated_finish)], ["训练词元 trained_tokens", num(job.trained_tokens)],
      ["随机种子 seed", job.seed], ["错误 error", job.error && job.error.message ? job.error.message : "—"],
    ].flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    hyper.replaceChildren(...Object.entries(hp).flatMap(([k, v]) => [h("dt", {}, k), h("dd", { class: "mono" }, typeof v === "object" ? JSON.stringify(v) : String(v))]));
    const rows = [];
    if (job.training_file) rows.push(await fileRow("训练 training_file", job.training_file));
    if (job.validation_file) rows.push(await fileRow("验证 validation_file", job.validation_file));
    for (const id of job.result_files || []) rows.push(await fileRow("结果 result_files", id));
    filesBox.replaceChildren(...rows);
    lineChart(lossChart, { series: series(LOSS_SERIES), xMax: total, xLabel: "训练步（step）", yLabel: "损失" });
    lineChart(accChart, { series: series(ACCURACY_SERIES), xMax: total, xLabel: "训练步（step）", yLabel: "词元准确率" });
    ckptBody.replaceChildren(...[...checkpoints].sort((a, b) => a.step_number - b.step_number).map(c => h("tr", { "data-step": c.step_number },
      h("td", { class: "num" }, c.step_number), h("td", { class: "mono" }, c.fine_tuned_model_checkpoint),
      h("td", { class: "num" }, num(c.metrics.train_loss)), h("td", { class: "num" }, num(c.metrics.valid_loss)),
      h("td", { class: "num" }, num(c.metrics.full_valid_loss)), h("td", { class: "num" }, num(c.metrics.full_valid_mean_token_accuracy)),
      h("td", {}, h("a", { href: `#/playground/${encodeURIComponent(jobId)}/${encodeURIComponent(c.fine_tuned_model_checkpoint)}` }, "试一试")))));
    if (!checkpoints.length) ckptBody.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "还没有检查点：每一轮（epoch）结束时保存一个。")));
  }

  function drawEvents(count) {
    const items = events.slice(-count).map(e => h("li", { class: e.level, "data-type": e.type },
      h("time", {}, when(e.created_at)), h("span", {}, e.message)));
    eventList.prepend(...items.reverse());
  }

  async function refresh() {
    job = await api(`/fine_tuning/jobs/${jobId}`);
    const fresh = await pullEvents();
    checkpoints = (await api(`/fine_tuning/jobs/${jobId}/checkpoints?limit=100`)).data;
    drawEvents(fresh);
    await draw();
  }

  return poller(refresh, () => (job && ["running", "queued", "validating_files"].includes(job.status) ? JOB_POLL_MS : IDLE_POLL_MS),
    err => { message.replaceChildren(errorLine(err)); ctx.onError(err); });
}

// ------------------------------------------------------------------------------------------------ files
export function filesView(root, ctx) {
  const body = h("tbody");
  const status = h("div");
  const note = h("p", { class: "muted" });
  root.append(h("h2", {}, "文件（files）"), note, status,
    h("table", { id: "files" }, h("thead", {}, h("tr", {}, h("th", {}, "文件名 filename"), h("th", {}, "ID"), h("th", {}, "用途 purpose"),
      h("th", { class: "num" }, "大小 bytes"), h("th", {}, "上传时间 created_at"), h("th", {}, "状态 status"))), body));
  const load = async () => {
    const files = (await api("/files?order=desc")).data;
    const total = files.reduce((a, f) => a + (f.bytes || 0), 0);
    note.textContent = `${files.length} 个文件，共 ${size(total)}。fine-tune 是上传的训练/验证数据，fine-tune-results 是作业写的结果文件（result_files）。`;
    body.replaceChildren(...files.map(f => h("tr", { "data-file": f.id }, h("td", {}, f.filename), h("td", { class: "mono" }, f.id),
      h("td", {}, f.purpose), h("td", { class: "num", title: `${f.bytes} bytes` }, size(f.bytes)), h("td", {}, when(f.created_at)), h("td", {}, f.status))));
    if (!files.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "还没有文件。第 04 节会上传训练文件。")));
    status.replaceChildren();
  };
  return poller(load, () => JOBS_POLL_MS, err => { status.replaceChildren(errorLine(err)); ctx.onError(err); });
}

// ------------------------------------------------------------------------------------------------ playground
/** The system message of the first example of a training file (07 asks every model with the prompt it was tuned with). */
async function trainingSystemPrompt(fileId) {
  const first = await firstLine(fileId);
  if (!first) return "";
  const system = (JSON.parse(first).messages || []).find(m => m.role === "system");
  return system && typeof system.content === "string" ? system.content : "";
}

export function playgroundView(root, ctx, jobId = null, checkpointId = null) {
  const SLOTS = [
    { key: "base", title: "基础模型（base model）" },
    { key: "tuned", title: "微调后的模型（fine-tuned model）" },
    { key: "checkpoint", title: "检查点（checkpoint）" },
  ];
  const jobSelect = h("select", { id: "pg-job", "aria-label": "作业" });
  const selects = Object.fromEntries(SLOTS.map(s => [s.key, h("select", { id: `pg-${s.key}`, "aria-label": s.title })]));
  const system = h("textarea", { id: "pg-system", rows: 2, placeholder: "系统提示（system），可以为空" });
  const prompt = h("textarea", { id: "pg-prompt", rows: 3 });
  prompt.value = EXAMPLE_QUESTION;
  const params = Object.fromEntries(Object.entries(DECODING).map(([k, v]) => [k, h("input", { id: `pg-${k}`, type: "number", value: v,
    step: k === "max_tokens" || k === "seed" ? 1 : 0.1, min: k === "frequency_penalty" ? -2 : 0 })]));
  const send = h("button", { id: "pg-send", type: "button", class: "primary" }, "发送（chat.completions）");
  const status = h("div");
  const cards = h("div", { class: "cards", id: "pg-cards" });
  root.append(
    h("h2", {}, "试验场（playground）：同一个问题，三个模型"),
    h("p", { class: "warning" }, "⚠️ 这些回答出自小模型，经常是错的：它会编造药名和剂量。它们只用来比较模型，不是医疗建议；身体不适请找医生。"),
    h("div", { class: "toolbar" }, h("label", {}, "按作业填入：", jobSelect)),
    h("div", { class: "form-grid" }, ...SLOTS.map(s => h("label", {}, s.title, selects[s.key]))),
    h("h3", {}, "提示"), system, prompt,
    h("div", { class: "params" }, ...Object.keys(DECODING).map(k => h("label", {}, k, params[k])), send),
    h("p", { class: "hint" }, "和第 07 节一样：temperature=0 是贪心解码（同样的输入给同样的回答），seed 让结果可复现，max_tokens 是回答的长度预算（07 取训练集参考回答的第 90 百分位，最多 512），frequency_penalty 是 07 练习 6 用来压住重复的参数（0.5）。"),
    status, cards);

  let models = [], jobs = [];
  const option = (id, label) => h("option", { value: id }, label || id);

  async function fillFromJob(id, preferCheckpoint = null) {
    const job = jobs.find(j => j.id === id);
    if (!job) return;
    // /v1/models lists base and fine-tuned models; a job's checkpoints come from its checkpoints list.
    const ckpts = [...(await api(`/fine_tuning/jobs/${id}/checkpoints?limit=100`)).data].sort((a, b) => a.step_number - b.step_number);
    selects.checkpoint.replaceChildren(option("", "（不用）"),
      ...ckpts.map(c => option(c.fine_tuned_model_checkpoint, `第 ${c.step_number} 步：${c.fine_tuned_model_checkpoint}`)));
    const ckpt = preferCheckpoint || (ckpts.length ? ckpts[0].fine_tuned_model_checkpoint : "");  // the earliest: furthest from the final model
    const pick = (sel, value) => { sel.value = value && [...sel.options].some(o => o.value === value) ? value : ""; };
    pick(selects.base, job.model);
    pick(selects.tuned, job.fine_tuned_model);
    pick(selects.checkpoint, ckpt);
    try { system.value = await trainingSystemPrompt(job.training_file); } catch (err) { if (err.status === 401) throw err; }
  }

  async function load() {
    models = (await api("/models")).data.map(m => m.id);
    jobs = await listAll("/fine_tuning/jobs");
    for (const key of ["base", "tuned"]) selects[key].replaceChildren(option("", "（不用）"), ...models.map(id => option(id)));
    selects.checkpoint.replaceChildren(option("", "（先按作业选）"));
    const usable = jobs.filter(j => j.fine_tuned_model || j.status === "running" || j.status === "paused");
    jobSelect.replaceChildren(option("", "（不按作业）"), ...usable.map(j => option(j.id, `${j.id} · ${j.user_provided_suffix || j.model} · ${STATUS_ZH[j.status] || j.status}`)));
    const chosen = jobId || (usable.find(j => j.fine_tuned_model) || {}).id || "";
    if (chosen) { jobSelect.value = chosen; await fillFromJob(chosen, checkpointId); }
    else if (models.length) selects.base.value = models[0];
  }

  async function ask(slot, model) {
    const card = h("div", { class: "card", "data-slot": slot.key });
    const answer = h("div", { class: "answer muted" }, "生成中…");
    const meta = h("div", { class: "meta" });
    card.append(h("h3", {}, slot.title), h("div", { class: "model mono" }, model), answer, meta);
    cards.append(card);
    const messages = [...(system.value.trim() ? [{ role: "system", content: system.value }] : []), { role: "user", content: prompt.value }];
    const body = { model, messages };
    for (const k of Object.keys(DECODING)) body[k] = Number(params[k].value);
    const started = performance.now();
    try {
      const res = await api("/chat/completions", { method: "POST", body, timeoutMs: CHAT_TIMEOUT_MS });
      const choice = res.choices[0];
      answer.className = "answer";
      answer.textContent = choice.message.content || "（空回答）";
      card.dataset.finish = choice.finish_reason;
      meta.textContent = `finish_reason=${choice.finish_reason} · 提示 ${res.usage.prompt_tokens} 个词元 · 回答 ${res.usage.completion_tokens} 个词元 · ${((performance.now() - started) / 1000).toFixed(1)} 秒`;
    } catch (err) {
      answer.className = "answer error";
      answer.textContent = err.message;
      card.dataset.error = "1";
      ctx.onError(err);
    }
  }

  jobSelect.addEventListener("change", () => {
    if (!jobSelect.value) { selects.checkpoint.replaceChildren(option("", "（先按作业选）")); return; }
    fillFromJob(jobSelect.value).catch(err => { status.replaceChildren(errorLine(err)); ctx.onError(err); });
  });
  send.addEventListener("click", async () => {
    const chosen = SLOTS.filter(s => selects[s.key].value);
    status.replaceChildren();
    if (!chosen.length) { status.replaceChildren(h("p", { class: "error" }, "至少选一个模型。")); return; }
    if (!prompt.value.trim()) { status.replaceChildren(h("p", { class: "error" }, "问题是空的。")); return; }
    send.disabled = true;
    cards.replaceChildren();
    await Promise.all(chosen.map(s => ask(s, selects[s.key].value)));
    send.disabled = false;
  });
  load().catch(err => { status.replaceChildren(errorLine(err)); ctx.onError(err); });
  return () => {};
}
