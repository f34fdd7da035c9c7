// Browser tests of the web console in Debian's Chromium (playwright-core), against a real
// manager in a real lab. Run by tests/tests/console.rs, which brings up the one-node lab and
// sets:
//   TRACEFLOW_CONSOLE_URL    https://127.0.0.1:PORT (the manager's one port)
//   TRACEFLOW_CONSOLE_CA     the manager's CA (PEM file)
//   TRACEFLOW_EDIT_TOKEN     bearer token of a user with role edit
//   TRACEFLOW_VIEW_TOKEN     bearer token of a user with role view
//   TRACEFLOW_CLUSTER        the lab's cluster (c1): n1 has default/p0 and p1, n2 has p2 and
//                            db; a ClusterNetworkPolicy deny-db (rule drop-clients) drops p0 -> db
//   TRACEFLOW_SCREENSHOT_DIR where form.png, allowed.png, dropped.png, history.png,
//                            clusters.png and narrow.png (a 390px window) go
//   TRACEFLOW_LAB_BIN, TRACEFLOW_LAB_DIR, TRACEFLOW_P1_IP
//                            `traceflow-lab`, the lab's directory and p1's address: the live
//                            trace test pings p1 from p0's namespace (`traceflow-lab exec`)
// Fails (never skips) when Chromium or a variable is missing.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import tls from "node:tls";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set: run this through tests/tests/console.rs (cargo nextest run -p traceflow-lab --test console)`);
  return v;
};
const URL_ = env("TRACEFLOW_CONSOLE_URL");
const CA = fs.readFileSync(env("TRACEFLOW_CONSOLE_CA"), "utf8");
const EDIT = env("TRACEFLOW_EDIT_TOKEN");
const VIEW = env("TRACEFLOW_VIEW_TOKEN");
const CLUSTER = env("TRACEFLOW_CLUSTER");
const LAB_BIN = env("TRACEFLOW_LAB_BIN");
const LAB_DIR = env("TRACEFLOW_LAB_DIR");
const P1_IP = env("TRACEFLOW_P1_IP");
const SHOTS = env("TRACEFLOW_SCREENSHOT_DIR");
if (!fs.existsSync(CHROMIUM)) {
  throw new Error(`${CHROMIUM} not found: apt-get install chromium (scripts/lib.sh install_deps does)`);
}

/**
 * The manager's certificate is issued by its own CA. Node verifies the chain against that CA
 * (and the name localhost); Chromium is then told to trust exactly that verified public key.
 */
function verifiedSpkiPin() {
  const u = new URL(URL_);
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host: u.hostname, port: Number(u.port), ca: CA, servername: "localhost",
      ALPNProtocols: ["http/1.1"] }, () => {
      const cert = sock.getPeerX509Certificate();
      sock.end();
      if (!sock.authorized || !cert) return reject(new Error(`manager certificate not verified: ${sock.authorizationError}`));
      const der = cert.publicKey.export({ type: "spki", format: "der" });
      resolve(createHash("sha256").update(der).digest("base64"));
    });
    sock.on("error", reject);
  });
}

let browser;
const problems = []; // page errors and CSP violations seen in any page

before(async () => {
  const pin = await verifiedSpkiPin();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      `--ignore-certificate-errors-spki-list=${pin}`],
  });
});

after(async () => {
  await browser?.close();
});

async function page(viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport });
  const p = await context.newPage();
  p.setDefaultTimeout(30_000);
  p.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  p.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|Refused to/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  const resp = await p.goto(URL_ + "/");
  assert.equal(resp?.status(), 200, "GET / answers 200");
  const headers = resp.headers();
  assert.match(headers["content-security-policy"] ?? "", /default-src 'none'/);
  assert.equal(headers["x-content-type-options"], "nosniff");
  assert.equal(headers["cache-control"], "no-store");
  return p;
}

async function signIn(p, token) {
  await p.getByLabel("Bearer token").fill(token);
  await p.getByRole("button", { name: "Sign in" }).click();
  if (token !== "not-a-valid-token") await p.locator("#app").waitFor({ state: "visible" });
}

const source = (p) => p.getByRole("group", { name: "Source", exact: true });
const dest = (p) => p.getByRole("group", { name: "Destination", exact: true });

/** The offered option values of a select. */
const options = (loc) => loc.locator("option").evaluateAll((os) => os.map((o) => o.value));

/** Cluster by typing (the field filters the registered clusters), source default/p0 through
 *  the Node and Namespace filters, destination Pod `dst` on Node `dstNode`. */
async function chooseEndpoints(p, dst = "default/p1", dstNode = "n1") {
  const cluster = p.getByLabel("Cluster", { exact: true });
  await cluster.fill(CLUSTER);
  await p.locator(`#cluster-list option[value="${CLUSTER}"]`).waitFor({ state: "attached" });
  await p.locator('#src-pod option[value="default/p0"]').waitFor({ state: "attached" });
  await source(p).getByLabel("Node").selectOption("n1");
  await source(p).getByLabel("Namespace").selectOption("default");
  await source(p).getByLabel("Pod").selectOption("default/p0");
  await p.getByLabel("Type", { exact: true }).selectOption("pod");
  await dest(p).getByLabel("Node").selectOption(dstNode);
  await dest(p).getByLabel("Namespace").selectOption("default");
  await dest(p).getByLabel("Pod").selectOption(dst);
  await p.getByLabel("Protocol type").selectOption("ICMP");
}

/** Waits until the trace section shows a trace other than `before`, and it has ended. */
async function newTraceDone(p, before) {
  await p.waitForFunction((b) => {
    const t = document.getElementById("trace");
    return t && !t.hidden && t.dataset.name && t.dataset.name !== b;
  }, before);
  await p.locator("#trace-phase", { hasText: /Succeeded|Failed/ }).waitFor({ timeout: 30_000 });
}

async function runTrace(p) {
  const before = await p.locator("#trace").getAttribute("data-name");
  await p.getByRole("button", { name: "Trace", exact: true }).click();
  await newTraceDone(p, before);
  return { phase: await p.locator("#trace-phase").textContent(), reason: await p.locator("#trace-reason").textContent() };
}

/** Elements sticking out of a narrow window (for the message of a failed check). */
const overflowing = (p) => p.evaluate(() => [...document.querySelectorAll("body *")]
  .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest(".scroll, .graph"))
  .slice(0, 8).map((e) => `${e.tagName.toLowerCase()}#${e.id}.${e.className} ${Math.round(e.getBoundingClientRect().right)}px`));

/** Observation rows: [#, type, component, node]. */
const rows = (p) => p.locator("#observations tbody tr").evaluateAll((trs) => trs.map((tr) =>
  [...tr.children].slice(0, 4).map((td) => td.textContent.trim())));

/** The details panel as {label: value}. */
const details = (p) => p.locator("#details-fields").evaluate((dl) => {
  const out = {};
  for (const dd of dl.querySelectorAll("dd")) out[dd.dataset.field] = dd.textContent;
  return out;
});

test("a wrong token gets a sign-in error and no console", async () => {
  const p = await page();
  await signIn(p, "not-a-valid-token");
  const err = p.locator("#signin-error");
  await err.waitFor({ state: "visible" });
  const text = await err.textContent();
  assert.match(text, /Sign-in failed/);
  assert.match(text, /bearer token is not valid/);
  assert.equal(await p.locator("#app").isVisible(), false, "the app stays hidden");
  assert.equal(await p.evaluate(() => sessionStorage.length), 0, "a refused token is not kept");
  await p.context().close();
});

let allowedName = "";
let droppedName = "";

test("the form: type-to-filter cluster, Node and Namespace filters, protocol fields and defaults", async () => {
  const p = await page();
  await signIn(p, EDIT);
  assert.ok(!p.url().includes(EDIT), "the token never appears in the URL");
  assert.equal(await p.evaluate(() => sessionStorage.getItem("traceflow.console.token")), EDIT);
  assert.equal(await p.locator("#session-label").textContent(), "Signed in as console-edit (edit)");
  // The cluster field offers the registered clusters (a datalist filters them as one types).
  assert.deepEqual(await options(p.locator("#cluster-list")), [CLUSTER]);
  await chooseEndpoints(p, "default/p2", "n2");
  // The filters narrow the Pods offered.
  assert.deepEqual(await options(source(p).getByLabel("Pod")), ["", "default/p0", "default/p1"]);
  assert.deepEqual(await options(dest(p).getByLabel("Pod")), ["default/db", "default/p2"]);
  await source(p).getByLabel("Node").selectOption("n2");
  assert.deepEqual(await options(source(p).getByLabel("Pod")), ["", "default/db", "default/p2"]);
  await source(p).getByLabel("Node").selectOption("n1");
  await source(p).getByLabel("Pod").selectOption("default/p0");
  // NSX's defaults: ICMP id 0, sequence 0, TTL 64; IPv4 or IPv6.
  assert.equal(await p.getByLabel("Identifier").inputValue(), "0");
  assert.equal(await p.getByLabel("Sequence").inputValue(), "0");
  assert.equal(await p.getByLabel("TTL").inputValue(), "64");
  assert.deepEqual(await options(p.getByLabel("IP address")), ["4", "6"]);
  await p.getByLabel("IP address").selectOption("6");
  assert.equal(await p.getByLabel("Hop limit").inputValue(), "64");
  await p.getByLabel("IP address").selectOption("4");
  // TCP: source port 0 (random), no destination port until one is given (an injected packet
  // to a Pod needs one, so the default form is never sent without), SYN preset (and a button
  // to return to it).
  await p.getByLabel("Protocol type").selectOption("TCP");
  assert.equal(await p.getByLabel("Identifier").isVisible(), false);
  assert.equal(await p.getByLabel("Source port").inputValue(), "0");
  assert.equal(await p.getByLabel("Destination port").inputValue(), "");
  assert.match(await p.locator("#dst-port-help").textContent(), /Required for a Pod or IP destination/);
  await p.getByRole("button", { name: "Trace", exact: true }).click();
  await p.locator("#trace-error", { hasText: "Enter a destination port (1 to 65535): an injected TCP packet to a Pod or IP needs one" }).waitFor();
  assert.equal(await p.getByLabel("SYN", { exact: true }).isChecked(), true, "SYN is the default flag");
  await p.getByLabel("ACK", { exact: true }).check();
  await p.getByLabel("SYN", { exact: true }).uncheck();
  await p.getByRole("button", { name: "SYN only" }).click();
  assert.equal(await p.getByLabel("SYN", { exact: true }).isChecked(), true);
  assert.equal(await p.getByLabel("ACK", { exact: true }).isChecked(), false);
  for (const proto of ["UDP", "SCTP"]) {
    await p.getByLabel("Protocol type").selectOption(proto);
    assert.equal(await p.getByLabel("Destination port").isVisible(), true, `${proto} has ports`);
    assert.equal(await p.locator("#tcp-flags").isVisible(), false, `${proto} has no TCP flags`);
  }
  // A bad port is caught before it is sent.
  await p.getByLabel("Destination port").fill("70000");
  await p.getByRole("button", { name: "Trace", exact: true }).click();
  await p.locator("#trace-error", { hasText: "Destination port must be a whole number from 0 to 65535" }).waitFor();
  // A destination Service or IP: the Pod filters give way to the right field.
  await p.getByLabel("Type", { exact: true }).selectOption("service");
  assert.deepEqual(await options(p.getByLabel("Service", { exact: true })), ["default/web"]);
  assert.equal(await dest(p).getByLabel("Node").isVisible(), false);
  assert.match(await p.locator("#dst-port-help").textContent(), /the Service's port/);
  await p.getByLabel("Type", { exact: true }).selectOption("ip");
  assert.equal(await p.getByLabel("IP", { exact: true }).isVisible(), true);
  await p.getByLabel("Type", { exact: true }).selectOption("pod");
  await p.getByLabel("Destination port").fill("0");
  await p.getByLabel("Protocol type").selectOption("ICMP");
  assert.equal(await p.locator("#trace-error").isVisible(), false, "changing a field clears the error");
  await p.screenshot({ path: `${SHOTS}/form.png`, fullPage: true });
  await p.context().close();
});

test("an allowed trace across the tunnel and one a policy drops: table, details, graph", async () => {
  const p = await page();
  await signIn(p, EDIT);
  const row = p.locator(`#clusters tr[data-cluster="${CLUSTER}"]`);
  assert.equal(await row.count(), 1);

  // Allowed: p0 (n1) → p2 (n2).
  await chooseEndpoints(p, "default/p2", "n2");
  let r = await runTrace(p);
  assert.equal(r.phase, "Succeeded", `reason ${r.reason}`);
  allowedName = (await p.locator("#trace-name").textContent()) ?? "";
  const allowed = await rows(p);
  assert.deepEqual(allowed[0], ["1", "Forwarded", "SpoofGuard", "n1 (sender)"], JSON.stringify(allowed));
  const out = allowed.find((x) => x[2] === "Forwarding · Output" && x[3] === "n1 (sender)");
  assert.ok(out, `an Output row on n1: ${JSON.stringify(allowed)}`);
  assert.deepEqual(allowed.at(-1).slice(1), ["Delivered", "Forwarding · Output", "n2 (receiver)"], JSON.stringify(allowed));
  assert.deepEqual(allowed.map((x) => Number(x[0])), allowed.map((_, i) => i + 1), "hop order");
  // The Output component on n1 opens the details with the tunnel IP.
  await p.locator(`#observations button.component[data-sequence="${out[0]}"]`).click();
  await p.locator("#details").waitFor({ state: "visible" });
  let d = await details(p);
  assert.equal(d["Observation type"], "Forwarded");
  assert.equal(d["Table"], "Output");
  assert.match(d["Tunnel destination IP"] ?? "", /^\d+\.\d+\.\d+\.\d+$/, JSON.stringify(d));
  assert.equal(await p.evaluate(() => document.activeElement?.id), "details-title", "focus moves to the details");
  // The graph: source → n1 → tunnel → n2 → destination reached, nothing highlighted.
  const graph = p.locator("#graph svg");
  assert.deepEqual(await graph.locator(".node-frame").evaluateAll((gs) => gs.map((g) => g.dataset.node)), ["n1", "n2"]);
  assert.equal(await graph.locator(".tunnel").count(), 1);
  assert.match(await graph.locator(".tunnel").textContent(), /tunnel/);
  assert.equal(await graph.locator(".hop.drop").count(), 0);
  assert.equal(await graph.locator(".endpoint.destination.unreached").count(), 0);
  assert.match(await graph.locator("title#graph-title").textContent(), /delivered to Pod default\/p2/);
  await p.screenshot({ path: `${SHOTS}/allowed.png`, fullPage: true });

  // Dropped: p0 → db, by deny-db's rule drop-clients on n2.
  await chooseEndpoints(p, "default/db", "n2");
  r = await runTrace(p);
  assert.equal(r.phase, "Succeeded", `a drop is a result, not a failure (reason ${r.reason})`);
  droppedName = (await p.locator("#trace-name").textContent()) ?? "";
  const dropped = await rows(p);
  const last = dropped.at(-1);
  assert.deepEqual(last.slice(1), ["Dropped", "NetworkPolicy · IngressMetric", "n2 (receiver)"], JSON.stringify(dropped));
  await p.getByRole("button", { name: "NetworkPolicy · IngressMetric" }).last().click();
  d = await details(p);
  assert.equal(d["Policy"], "AntreaClusterNetworkPolicy:deny-db", JSON.stringify(d));
  assert.equal(d["Rule"], "drop-clients");
  assert.equal(d["Observation type"], "Dropped");
  // Keyboard: Escape closes the panel and focus returns to the component.
  await p.keyboard.press("Escape");
  assert.equal(await p.locator("#details").isVisible(), false);
  assert.equal(await p.evaluate(() => document.activeElement?.dataset.sequence), last[0]);
  // The graph highlights the drop point on n2; the destination is not reached.
  const drop = p.locator("#graph svg .hop.drop");
  assert.equal(await drop.count(), 1);
  assert.equal(await drop.getAttribute("data-sequence"), last[0]);
  assert.match(await drop.textContent(), /✕ Dropped/);
  assert.equal(await p.locator("#graph svg .endpoint.destination.unreached").count(), 1);
  assert.match(await p.locator("#graph svg title#graph-title").textContent(), /dropped at n2 NetworkPolicy IngressMetric/);
  // The drop point is a button too: Enter opens its details.
  await drop.focus();
  await p.keyboard.press("Enter");
  await p.locator("#details").waitFor({ state: "visible" });
  assert.equal((await details(p))["Rule"], "drop-clients");
  await p.screenshot({ path: `${SHOTS}/dropped.png`, fullPage: true });

  // A Service: the LB hop names the endpoint and the translated address.
  await p.getByLabel("Type", { exact: true }).selectOption("service");
  await p.getByLabel("Service", { exact: true }).selectOption("default/web");
  await p.getByLabel("Protocol type").selectOption("TCP");
  await p.getByLabel("Destination port").fill("80");
  r = await runTrace(p);
  assert.equal(r.phase, "Succeeded", `reason ${r.reason}`);
  assert.match(await p.locator("#trace-packet").textContent(), /TCP, ports any → 80, flags 2/);
  const lb = (await rows(p)).find((x) => x[2] === "LB");
  assert.ok(lb, JSON.stringify(await rows(p)));
  await p.locator(`#observations button.component[data-sequence="${lb[0]}"]`).click();
  d = await details(p);
  assert.match(d["Endpoint Pod"] ?? "", /^default\/p[12]$/, JSON.stringify(d));
  assert.match(d["Translated destination IP"] ?? "", /^10\.10\.[01]\.\d+$/);

  // SCTP (ours; Antrea has none): an INIT to p1 is delivered.
  await chooseEndpoints(p, "default/p1", "n1");
  await p.getByLabel("Protocol type").selectOption("SCTP");
  await p.getByLabel("Destination port").fill("9000");
  r = await runTrace(p);
  assert.equal(r.phase, "Succeeded", `reason ${r.reason}`);
  assert.match(await p.locator("#trace-packet").textContent(), /SCTP/);
  await p.context().close();
});

test("history: filter by phase, open, retrace and delete", async () => {
  const p = await page();
  await signIn(p, EDIT);
  await p.getByRole("button", { name: "History", exact: true }).click();
  await p.locator("#view-history").waitFor({ state: "visible" });
  assert.equal(await p.getByRole("button", { name: "History", exact: true }).getAttribute("aria-current"), "page");
  await p.getByLabel("Filter by cluster").selectOption(CLUSTER);
  await p.getByLabel("Filter by phase").selectOption({ label: "Failed" });
  await p.locator(`#history-table[data-cluster="${CLUSTER}"][data-phase="4"] tbody tr[data-name]`).first().waitFor();
  const phases = () => p.locator("#history-table tbody tr[data-name] td.phase-Succeeded, #history-table tbody tr[data-name] td.phase-Failed")
    .evaluateAll((tds) => tds.map((td) => td.textContent));
  let seen = await phases();
  assert.ok(seen.length >= 1 && seen.every((x) => x === "Failed"), JSON.stringify(seen));
  assert.match(await p.locator("#history-table tbody tr[data-name]").first().textContent(), /ghost/);
  await p.getByLabel("Filter by phase").selectOption({ label: "Succeeded" });
  await p.locator(`#history-table[data-phase="3"] tr[data-name="${droppedName}"]`).waitFor();
  seen = await phases();
  assert.ok(seen.length === 20 && seen.every((x) => x === "Succeeded"), JSON.stringify(seen));
  await p.screenshot({ path: `${SHOTS}/history.png`, fullPage: true });

  // Open shows the stored result.
  await p.getByRole("button", { name: `Open trace ${droppedName}` }).click();
  await p.locator("#view-trace").waitFor({ state: "visible" });
  assert.equal(await p.locator("#trace-name").textContent(), droppedName);
  assert.equal(await p.locator("#graph svg .hop.drop").count(), 1);

  // Retrace runs the same spec as a new trace and shows it.
  await p.getByRole("button", { name: "History", exact: true }).click();
  await p.getByRole("button", { name: `Retrace ${allowedName}` }).click();
  await p.locator("#view-trace").waitFor({ state: "visible" });
  await newTraceDone(p, droppedName);
  const again = await p.locator("#trace-name").textContent();
  assert.notEqual(again, allowedName);
  assert.equal(await p.locator("#trace-phase").textContent(), "Succeeded");
  assert.match(await p.locator("#trace-destination").textContent(), /Pod default\/p2/);

  // Delete asks once more, then the row is gone.
  await p.getByRole("button", { name: "History", exact: true }).click();
  await p.getByLabel("Filter by phase").selectOption({ label: "All phases" });
  const row = p.locator(`#history-table[data-phase="0"] tr[data-name="${again}"]`);
  await row.waitFor();
  await p.getByRole("button", { name: `Delete trace ${again}` }).click();
  assert.equal(await row.count(), 1, "the first click only asks");
  await p.getByRole("button", { name: `Confirm delete of trace ${again}` }).click();
  await p.locator("#history-status", { hasText: `Deleted ${again}.` }).waitFor();
  assert.equal(await row.count(), 0);
  await p.context().close();
});

test("a view-only user reads everything but is refused every edit", async () => {
  const p = await page();
  await signIn(p, VIEW);
  assert.equal(await p.locator("#session-label").textContent(), "Signed in as console-view (view)");
  await chooseEndpoints(p);
  await p.getByRole("button", { name: "Trace", exact: true }).click();
  const err = p.locator("#trace-error");
  await err.waitFor({ state: "visible" });
  const text = await err.textContent();
  assert.match(text, /^Permission denied: /);
  assert.match(text, /requires role edit/);
  assert.equal(await p.locator("#trace").isVisible(), false, "no trace was shown");
  // Clusters page: health, agents, inventory counts.
  await p.getByRole("button", { name: "Clusters", exact: true }).click();
  const c = p.locator(`#clusters tr[data-cluster="${CLUSTER}"]`);
  await c.waitFor();
  const cells = await c.locator("th, td").evaluateAll((tds) => tds.map((td) => td.textContent));
  assert.deepEqual(cells.slice(0, 8), [CLUSTER, "Up", "2 / 2", "2", cells[4], "4", "1", "1"], JSON.stringify(cells));
  await p.screenshot({ path: `${SHOTS}/clusters.png` });
  // History pages: the driver's 20 traces plus the edit user's are more than a page.
  await p.getByRole("button", { name: "History", exact: true }).click();
  await p.locator(`#history-table tr[data-name="${allowedName}"]`).waitFor();
  const names = () => p.locator("#history-table tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.name));
  const first = await names();
  assert.equal(first.length, 20, "20 traces per page");
  assert.equal(await p.getByRole("button", { name: "First page" }).isDisabled(), true);
  await p.getByRole("button", { name: "Next page" }).click();
  await p.locator("#history-page", { hasText: "Page 2" }).waitFor();
  const second = await names();
  assert.ok(second.length >= 2, `second page: ${JSON.stringify(second)}`);
  assert.ok(second.every((n) => n && !first.includes(n)), "pages do not overlap");
  await p.getByRole("button", { name: "First page" }).click();
  await p.locator(`#history-table tr[data-name="${allowedName}"]`).waitFor();
  // Retrace and delete are refused by the manager, and the trace stays.
  await p.getByRole("button", { name: `Retrace ${allowedName}` }).click();
  await p.locator("#history-error", { hasText: /^Permission denied: .*requires role edit/ }).waitFor();
  await p.getByRole("button", { name: `Delete trace ${allowedName}` }).click();
  await p.getByRole("button", { name: `Confirm delete of trace ${allowedName}` }).click();
  await p.locator("#history-error", { hasText: /^Permission denied: .*requires role edit/ }).waitFor();
  assert.equal(await p.locator(`#history-table tr[data-name="${allowedName}"]`).count(), 1);
  await p.context().close();
});

test("a live trace started in the console captures a real ping from p0 to p1", async () => {
  const p = await page();
  await signIn(p, EDIT);
  await chooseEndpoints(p);
  await p.locator("#live-traffic").check();
  await p.getByRole("button", { name: "Trace", exact: true }).click();
  await p.locator("#trace").waitFor({ state: "visible" });
  // The trace arms asynchronously: a new ping (a new connection) until it ends.
  const deadline = Date.now() + 30_000;
  let phase = "";
  while (Date.now() < deadline) {
    phase = (await p.locator("#trace-phase").textContent()) ?? "";
    if (/Succeeded|Failed/.test(phase)) break;
    const ping = spawnSync(LAB_BIN, ["--dir", LAB_DIR, "exec", `${CLUSTER}/default/p0`, "--",
      "ping", "-c1", "-W1", P1_IP], { encoding: "utf8", timeout: 10_000 });
    assert.equal(ping.status, 0, `ping p0 -> p1 failed: ${ping.stdout}${ping.stderr}`);
    await p.waitForTimeout(200);
  }
  assert.equal(phase, "Succeeded", `reason: ${await p.locator("#trace-reason").textContent()}`);
  const hops = (await rows(p)).map((x) => [x[2], x[1], x[3]]);
  assert.deepEqual(hops, [["SpoofGuard", "Forwarded", "n1 (sender)"], ["Forwarding · Output", "Delivered", "n1 (sender)"]]);
  assert.equal(await p.locator("#captured").isVisible(), true, "the captured packet is shown");
  const captured = (await p.locator("#captured-packet").textContent()) ?? "";
  assert.match(captured, /10\.10\.0\.2/);
  assert.ok(captured.includes(P1_IP), captured);
  assert.match(captured, /ICMP/);
  await p.context().close();
});

test("accessible: every field labelled, keyboard navigation, a narrow window without sideways scroll", async () => {
  const p = await page({ width: 390, height: 800 });
  await signIn(p, EDIT);
  const unlabelled = await p.evaluate(() => [...document.querySelectorAll("input, select")]
    .filter((e) => e.type !== "hidden" && e.labels.length === 0 && !e.getAttribute("aria-label"))
    .map((e) => e.id || e.outerHTML));
  assert.deepEqual(unlabelled, []);
  // The page fits: nothing wider than the window except inside the scroll containers.
  assert.ok(await p.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1),
    `page is wider than a 390px window: ${JSON.stringify(await overflowing(p))}`);
  await chooseEndpoints(p, "default/db", "n2");
  await runTrace(p);
  assert.ok(await p.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1),
    `the result is wider than a 390px window: ${JSON.stringify(await overflowing(p))}`);
  await p.screenshot({ path: `${SHOTS}/narrow.png`, fullPage: true });
  // Keyboard only: Tab reaches the nav, Enter switches pages.
  await p.getByRole("button", { name: "Clusters", exact: true }).focus();
  await p.keyboard.press("Enter");
  await p.locator("#view-clusters").waitFor({ state: "visible" });
  await p.keyboard.press("Shift+Tab");
  await p.keyboard.press("Enter");
  await p.locator("#view-history").waitFor({ state: "visible" });
  await p.context().close();
});

test("no page errors or CSP violations", () => {
  assert.deepEqual(problems, []);
});
