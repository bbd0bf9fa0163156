// The dashboard's entry: the key form, the hash routes (#/jobs, #/jobs/<id>, #/files, #/playground[/<job>[/<checkpoint>]])
// and the life of each view (a view's polling stops when another view opens or the key is forgotten).

import { api, getKey, setKey, forgetKey, ApiError } from "./api.js";
import { filesView } from "./files.js";
import { jobView } from "./job.js";
import { jobsView } from "./jobs.js";
import { playgroundView } from "./playground.js";

const login = document.getElementById("login");
const loginError = document.getElementById("login-error");
const keyInput = document.getElementById("key");
const nav = document.getElementById("nav");
const forget = document.getElementById("forget");
const view = document.getElementById("view");
let stopView = () => {};

const ctx = {
  go(hash) { window.location.hash = hash; },
  onError(err) {
    if (err instanceof ApiError && err.status === 401) lock("这个密钥不被接受（401）：" + err.message);
  },
};

/** Show only the key form: no data stays on the page. */
function lock(reason = "") {
  stopView();
  stopView = () => {};
  forgetKey();
  view.replaceChildren();
  nav.hidden = true;
  forget.hidden = true;
  login.hidden = false;
  loginError.textContent = reason;
  keyInput.focus();
}

function route() {
  stopView();
  view.replaceChildren();
  if (!getKey()) { lock(); return; }
  login.hidden = true;
  nav.hidden = false;
  forget.hidden = false;
  const parts = (window.location.hash.replace(/^#\/?/, "") || "jobs").split("/").map(decodeURIComponent);
  for (const a of nav.querySelectorAll("a")) a.classList.toggle("current", a.dataset.view === parts[0]);
  if (parts[0] === "jobs" && parts[1]) stopView = jobView(view, ctx, parts[1]);
  else if (parts[0] === "files") stopView = filesView(view, ctx);
  else if (parts[0] === "playground") stopView = playgroundView(view, ctx, parts[1] || null, parts[2] || null);
  else stopView = jobsView(view, ctx);
}

document.getElementById("login-form").addEventListener("submit", async event => {
  event.preventDefault();  // never a form submission: the key must not reach a URL
  const key = keyInput.value.trim();
  if (!key) { loginError.textContent = "先输入密钥。"; return; }
  setKey(key);
  try {
    await api("/models");
  } catch (err) {
    forgetKey();
    loginError.textContent = err.status === 401 ? "密钥不对（401 Incorrect API key）。" : err.message;
    return;
  }
  keyInput.value = "";
  loginError.textContent = "";
  route();
});
forget.addEventListener("click", () => lock("密钥已从这个标签页删除。"));
window.addEventListener("hashchange", route);
route();
