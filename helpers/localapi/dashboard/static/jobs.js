// The jobs list: status, base model, suffix, created, trained tokens; filtered by status; polled.

import { listAll } from "./api.js";
import { STATUS_ZH, badge, errorLine, h, num, poller, when } from "./dom.js";

const JOBS_POLL_MS = 5000;

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
