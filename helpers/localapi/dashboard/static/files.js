// The files list: name, id, purpose, size, upload time, status.

import { api } from "./api.js";
import { errorLine, h, poller, size, when } from "./dom.js";

const FILES_POLL_MS = 5000;

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
  return poller(load, () => FILES_POLL_MS, err => { status.replaceChildren(errorLine(err)); ctx.onError(err); });
}
