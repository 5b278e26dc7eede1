import type { NextConfig } from "next";

// A static export: the orchestrator serves web/out at "/". Data is fetched in
// the browser from the orchestrator (Connect + SSE), so nothing runs on a
// Node server in production.
const config: NextConfig = {
  output: "export",
  images: { unoptimized: true },
  reactStrictMode: true,
  poweredByHeader: false,
  // The repository root has its own package-lock.json (the proto tools);
  // the dashboard is its own project.
  turbopack: { root: process.cwd() },
};

export default config;
