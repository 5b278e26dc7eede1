// Measures the dashboard in headless Chromium for SECONDS_TO_RUN seconds:
// frames per second (requestAnimationFrame), main-thread task time (Chrome
// DevTools Protocol Performance metrics), long tasks, and the SSE events the
// page received (counted from the network, not from our own code). Prints
// one JSON object.
import { chromium } from "playwright-core";

const BASE = process.env.BASE_URL ?? "http://127.0.0.1:8081";
const SECONDS = Number(process.env.SECONDS_TO_RUN ?? 30);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
const cdp = await page.context().newCDPSession(page);
await cdp.send("Network.enable");
await cdp.send("Performance.enable");
let events = 0;
let ticks = 0;
cdp.on("Network.eventSourceMessageReceived", (e) => {
  events++;
  if (e.eventName === "tick") ticks++;
});
await page.goto(`${BASE}/`);
await page.getByTestId("connection").filter({ hasText: "live" }).waitFor({ timeout: 60000 });
await page.evaluate(() => {
  const w = window;
  w.__frames = 0;
  w.__long = 0;
  const loop = () => { w.__frames++; requestAnimationFrame(loop); };
  requestAnimationFrame(loop);
  new PerformanceObserver((l) => { w.__long += l.getEntries().length; }).observe({ type: "longtask", buffered: false });
});
const metric = async () => {
  const m = await cdp.send("Performance.getMetrics");
  return m.metrics.find((x) => x.name === "TaskDuration")?.value ?? 0;
};
events = 0;
ticks = 0;
const task0 = await metric();
const t0 = Date.now();
await page.waitForTimeout(SECONDS * 1000);
const seconds = (Date.now() - t0) / 1000;
const task1 = await metric();
const frames = await page.evaluate(() => window.__frames);
const longTasks = await page.evaluate(() => window.__long);
console.log(JSON.stringify({ seconds, fps: frames / seconds, busyMs: (task1 - task0) * 1000, longTasks, events, ticks }));
await browser.close();
