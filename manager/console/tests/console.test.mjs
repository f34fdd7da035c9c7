// Browser tests of the web console in Debian's Chromium (playwright-core), against a real
// manager in a real lab. Run by tests/tests/console.rs, which brings up the one-node lab and
// sets:
//   TRACEFLOW_CONSOLE_URL    https://127.0.0.1:PORT (the manager's one port)
//   TRACEFLOW_CONSOLE_CA     the manager's CA (PEM file)
//   TRACEFLOW_EDIT_TOKEN     bearer token of a user with role edit
//   TRACEFLOW_VIEW_TOKEN     bearer token of a user with role view
//   TRACEFLOW_CLUSTER        the lab's cluster (c1); Pods default/p0 and default/p1 on one Node
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

async function page() {
  const context = await browser.newContext();
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
}

async function chooseEndpoints(p) {
  await p.locator(`#clusters tr[data-cluster="${CLUSTER}"]`).waitFor();
  await p.getByLabel("Cluster", { exact: true }).selectOption(CLUSTER);
  // The dropdowns come from the manager's inventory: wait for p0 and p1 to be offered.
  await p.locator('#src-pod option[value="p0"]').waitFor({ state: "attached" });
  await p.getByRole("group", { name: "Source", exact: true }).getByLabel("Namespace").selectOption("default");
  await p.getByRole("group", { name: "Source", exact: true }).getByLabel("Pod").selectOption("p0");
  await p.getByLabel("Type").selectOption("pod");
  await p.getByRole("group", { name: "Destination", exact: true }).getByLabel("Namespace").selectOption("default");
  await p.locator('#dst-pod option[value="p1"]').waitFor({ state: "attached" });
  await p.getByRole("group", { name: "Destination", exact: true }).getByLabel("Pod").selectOption("p1");
  await p.getByLabel("Protocol").selectOption("ICMP");
}

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

let traceName = "";

test("an edit user traces p0 to p1 from the dropdowns and sees it succeed live", async () => {
  const p = await page();
  await signIn(p, EDIT);
  await p.locator("#app").waitFor({ state: "visible" });
  assert.ok(!p.url().includes(EDIT), "the token never appears in the URL");
  assert.equal(await p.evaluate(() => sessionStorage.getItem("traceflow.console.token")), EDIT);
  assert.equal(await p.locator("#session-label").textContent(), "Signed in as console-edit (edit)");
  const row = p.locator(`#clusters tr[data-cluster="${CLUSTER}"]`);
  await row.waitFor();
  assert.match(await row.textContent(), /Up/);

  await chooseEndpoints(p);
  await p.getByRole("button", { name: "Start trace" }).click();
  await p.locator("#trace").waitFor({ state: "visible" });
  await p.locator("#trace-phase", { hasText: /Succeeded|Failed/ }).waitFor({ timeout: 30_000 });
  const phase = await p.locator("#trace-phase").textContent();
  const reason = await p.locator("#trace-reason").textContent();
  assert.equal(phase, "Succeeded", `phase ${phase}, reason ${reason}`);
  traceName = (await p.locator("#trace-name").textContent()) ?? "";
  assert.ok(traceName, "the trace has a name");

  const node = p.locator('#trace-results .node[data-node="n1"]');
  assert.match(await node.locator("h3").textContent(), /Node n1 \(sender\)/);
  const hops = await node.locator("ol.hops > li").evaluateAll((lis) => lis.map((li) => ({
    component: li.dataset.component, info: li.dataset.componentInfo, action: li.dataset.action,
    seq: Number(li.dataset.sequence), text: li.textContent,
  })));
  assert.deepEqual(hops.map((h) => [h.component, h.info, h.action]),
    [["SpoofGuard", "", "Forwarded"], ["Forwarding", "Output", "Delivered"]], JSON.stringify(hops));
  assert.ok(hops[0].seq < hops[1].seq, "hops in sequence order");
  assert.match(hops[0].text, /SpoofGuard/);
  assert.match(hops[0].text, /srcPodIP: 10\.10\.0\.2/);
  assert.match(hops[1].text, /Output/);
  assert.match(hops[1].text, /Delivered/);
  assert.match(await p.locator("#trace-source").textContent(), /default\/p0/);
  assert.match(await p.locator("#trace-destination").textContent(), /Pod default\/p1/);
  assert.match(await p.locator("#trace-duration").textContent(), /ms$/);
  if (process.env.TRACEFLOW_CONSOLE_SCREENSHOT) {
    await p.screenshot({ path: process.env.TRACEFLOW_CONSOLE_SCREENSHOT, fullPage: true });
  }

  // The history (refreshed when the watch ended) lists it; opening it shows the same result.
  await p.getByLabel("Filter by cluster").selectOption(CLUSTER);
  const hist = p.locator(`#history-table tr[data-name="${traceName}"]`);
  await hist.waitFor();
  assert.match(await hist.textContent(), /Succeeded/);
  assert.match(await hist.textContent(), /default\/p0/);
  await p.reload(); // the session survives a reload of the tab (sessionStorage)
  await p.locator("#app").waitFor({ state: "visible" });
  assert.equal(await p.locator("#trace").isVisible(), false);
  await p.getByRole("button", { name: `Open trace ${traceName}` }).click();
  await p.locator("#trace-phase", { hasText: "Succeeded" }).waitFor();
  assert.equal(await p.locator("#trace-name").textContent(), traceName);
  assert.equal(await p.locator('#trace-results ol.hops > li[data-component="SpoofGuard"][data-action="Forwarded"]').count(), 1);
  assert.equal(await p.locator('#trace-results ol.hops > li[data-component="Forwarding"][data-action="Delivered"]').count(), 1);

  // A field the manager refuses is reported with the field it names.
  await chooseEndpoints(p);
  await p.getByLabel("Protocol").selectOption("UDP");
  await p.getByLabel("Destination port").fill("70000");
  await p.getByRole("button", { name: "Start trace" }).click();
  const err = p.locator("#trace-error");
  await err.waitFor({ state: "visible" });
  assert.match(await err.textContent(), /Invalid request: .*udp\.dstPort/);

  // SCTP (ours; Antrea has none): an INIT to p1 is delivered.
  await p.getByLabel("Protocol").selectOption("SCTP");
  await p.getByLabel("Destination port").fill("9000");
  await p.getByRole("button", { name: "Start trace" }).click();
  await p.locator("#trace-phase", { hasText: /Succeeded|Failed/ }).waitFor({ timeout: 30_000 });
  assert.equal(await p.locator("#trace-phase").textContent(), "Succeeded",
    `reason: ${await p.locator("#trace-reason").textContent()}`);
  assert.match(await p.locator("#trace-packet").textContent(), /SCTP/);

  // TCP SYN to the Service web:80: the LB hop names the endpoint and the translated address.
  await p.getByLabel("Type").selectOption("service");
  await p.locator('#dst-service option[value="web"]').waitFor({ state: "attached" });
  await p.getByLabel("Service", { exact: true }).selectOption("web");
  await p.getByLabel("Protocol").selectOption("TCP");
  await p.getByLabel("Destination port").fill("80");
  assert.equal(await p.getByLabel("SYN").isChecked(), true, "SYN is the default flag");
  await p.getByRole("button", { name: "Start trace" }).click();
  await p.locator("#trace-destination", { hasText: "Service default/web" }).waitFor();
  await p.locator("#trace-phase", { hasText: /Succeeded|Failed/ }).waitFor({ timeout: 30_000 });
  assert.equal(await p.locator("#trace-phase").textContent(), "Succeeded",
    `reason: ${await p.locator("#trace-reason").textContent()}`);
  assert.match(await p.locator("#trace-packet").textContent(), /TCP, ports any → 80, flags 2/);
  const svcHops = await p.locator("#trace-results ol.hops > li").evaluateAll((lis) =>
    lis.map((li) => [li.dataset.component, li.dataset.action, li.textContent]));
  assert.deepEqual(svcHops.map(([c, a]) => [c, a]),
    [["SpoofGuard", "Forwarded"], ["LB", "Forwarded"], ["Forwarding", "Delivered"]], JSON.stringify(svcHops));
  assert.match(svcHops[1][2], /endpoint pod: default\/p[12]/);
  assert.match(svcHops[1][2], /translatedDstIP: 10\.10\.0\.[34]/);

  await p.getByRole("button", { name: "Sign out" }).click();
  await p.locator("#signin").waitFor({ state: "visible" });
  assert.equal(await p.evaluate(() => sessionStorage.length), 0, "sign out forgets the token");
  await p.context().close();
});

test("a view-only user sees clusters and history but gets a clear permission error on create", async () => {
  const p = await page();
  await signIn(p, VIEW);
  await p.locator("#app").waitFor({ state: "visible" });
  assert.equal(await p.locator("#session-label").textContent(), "Signed in as console-view (view)");
  await chooseEndpoints(p);
  await p.getByRole("button", { name: "Start trace" }).click();
  const err = p.locator("#trace-error");
  await err.waitFor({ state: "visible" });
  const text = await err.textContent();
  assert.match(text, /^Permission denied: /);
  assert.match(text, /requires role edit/);
  assert.equal(await p.locator("#trace").isVisible(), false, "no trace was shown");
  // History pages: the 20 traces the driver made plus the edit user's are more than a page.
  await p.locator(`#history-table tr[data-name="${traceName}"]`).waitFor();
  const names = () => p.locator("#history-table tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.name));
  const first = await names();
  assert.equal(first.length, 20, "20 traces per page");
  assert.equal(await p.getByRole("button", { name: "First page" }).isDisabled(), true);
  await p.getByRole("button", { name: "Next page" }).click();
  await p.getByRole("button", { name: "First page" }).and(p.locator(":enabled")).waitFor();
  const second = await names();
  assert.ok(second.length >= 2, `second page: ${JSON.stringify(second)}`);
  assert.ok(second.every((n) => n && !first.includes(n)), "pages do not overlap");
  assert.ok(second.some((n) => n.startsWith("p0-to-p2")), "older driver traces are on page 2");
  await p.getByRole("button", { name: "First page" }).click();
  await p.locator(`#history-table tr[data-name="${traceName}"]`).waitFor();
  await p.context().close();
});

test("a live trace started in the console captures a real ping from p0 to p1", async () => {
  const p = await page();
  await signIn(p, EDIT);
  await p.locator("#app").waitFor({ state: "visible" });
  await chooseEndpoints(p);
  await p.getByLabel("Protocol").selectOption("ICMP");
  await p.locator("#live-traffic").check();
  await p.getByRole("button", { name: "Start trace" }).click();
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
  const hops = await p.locator('#trace-results .node[data-node="n1"] ol.hops > li').evaluateAll(
    (lis) => lis.map((li) => [li.dataset.component, li.dataset.action]));
  assert.deepEqual(hops, [["SpoofGuard", "Forwarded"], ["Forwarding", "Delivered"]]);
  assert.equal(await p.locator("#captured").isVisible(), true, "the captured packet is shown");
  const captured = (await p.locator("#captured-packet").textContent()) ?? "";
  assert.match(captured, /10\.10\.0\.2/);
  assert.ok(captured.includes(P1_IP), captured);
  assert.match(captured, /ICMP/);
});

test("no page errors or CSP violations", () => {
  assert.deepEqual(problems, []);
});
