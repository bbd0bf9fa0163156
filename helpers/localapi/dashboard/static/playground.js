// The playground: one prompt to the base model, the fine-tuned model and a checkpoint side by side, with the
// decoding parameters of notebook 07, through /v1/chat/completions.

import { api, firstLine, listAll, CHAT_TIMEOUT_MS } from "./api.js";
import { STATUS_ZH, errorLine, h } from "./dom.js";

// Notebook 07's decoding: greedy (temperature 0), a fixed seed, a token budget, frequency_penalty 0 (its exercise: 0.5).
const DECODING = { temperature: 0, max_tokens: 256, seed: 42, frequency_penalty: 0 };
const EXAMPLE_QUESTION = "我在体检是正常的，但是去献血医生最是说我的血压高，不能献。血压是130、80这是为什么呢？";

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
