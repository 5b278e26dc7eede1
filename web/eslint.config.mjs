import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["out/**", ".next/**", "node_modules/**", "src/gen/**", "next-env.d.ts"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ["tests/**/*.mjs"],
    languageOptions: { globals: { process: "readonly", console: "readonly", URL: "readonly", document: "readonly", window: "readonly", requestAnimationFrame: "readonly", PerformanceObserver: "readonly" } },
  },
);
