// One job: summary, hyperparameters, files, the loss and accuracy charts (from its `metrics` events and checkpoints,
// as notebook 06 reads them), checkpoints, events as they arrive, and pause / resume / cancel.

import { api } from "./api.js";
import { lineChart } from "./chart.js";
import { ACTIVE, PAUSABLE, badge, errorLine, h, num, poller, size, when } from "./dom.js";

const JOB_POLL_MS = 1500, IDLE_POLL_MS = 5000;
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
