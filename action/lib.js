// The action's logic, shared by main.js (install, log in, export) and post.js (revoke). Plain
// node, no dependencies: the runner's workflow-command files and environment are the interface
// (https://docs.github.com/en/actions/reference/workflow-commands-for-github-actions).
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const { spawnSync } = require("node:child_process");

/** Release asset of sts-client for each runner platform (static musl builds, see release.yml). */
const ASSETS = {
  "linux-x64": "sts-client-x86_64-unknown-linux-musl",
  "linux-arm64": "sts-client-aarch64-unknown-linux-musl",
};

/** The checksum file published beside the assets, in `sha256sum` format. */
const CHECKSUMS = "SHA256SUMS";

/** Saved by main for post (the runner hands it back as STATE_<name>). */
const STATE_CLIENT = "client";
const STATE_ENV = "client_env";

/** An input as the runner passes it (`INPUT_<NAME>`, name upper-cased, spaces to `_`), trimmed. */
function input(name, { required = false, env = process.env } = {}) {
  const value = (env[`INPUT_${name.replace(/ /g, "_").toUpperCase()}`] || "").trim();
  if (required && !value) {
    throw new Error(`input \`${name}\` is required`);
  }
  return value;
}

/**
 * Append `name=value` to a runner command file (GITHUB_ENV, GITHUB_STATE, GITHUB_OUTPUT) in the
 * heredoc form, with a random delimiter that the value cannot contain, so a value with newlines
 * cannot inject a second variable.
 */
function appendCommandFile(file, name, value) {
  requireFile(file, name);
  const delimiter = `ghadelimiter_${crypto.randomUUID()}`;
  if (name.includes(delimiter) || String(value).includes(delimiter)) {
    throw new Error(`unexpected delimiter in ${name}`);
  }
  fs.appendFileSync(file, `${name}<<${delimiter}\n${value}\n${delimiter}\n`, { encoding: "utf8" });
}

/** A runner command file's path, or an error: outside GitHub Actions there is none. */
function requireFile(file, what) {
  if (!file) {
    throw new Error(`no runner command file for ${what}: not running in GitHub Actions?`);
  }
  return file;
}

/** Tell the runner to hide `secret` in every later log line (and this one's echo of it). */
function mask(secret, out = process.stdout) {
  for (const line of String(secret).split(/\r?\n/)) {
    if (line.trim()) {
      out.write(`::add-mask::${line}\n`);
    }
  }
}

/**
 * The secrets in the client's environment: the token inside each git rewrite
 * (`url.https://x-access-token:TOKEN@github.com/…`) and every variable named like a token
 * (`ATMOS_PRO_GITHUB_TOKEN`, `GH_TOKEN_ACME`).
 */
function secretsIn(env) {
  const secrets = new Set();
  for (const [name, value] of Object.entries(env)) {
    for (const match of String(value).matchAll(/x-access-token:([^@\s]+)@/g)) {
      secrets.add(match[1]);
    }
    if (/TOKEN/i.test(name) && value) {
      secrets.add(String(value));
    }
  }
  return [...secrets];
}

/** The environment sts-client reads its options from (docs/client.md), from the inputs. */
function clientEnv(env = process.env) {
  const runnerTemp = env.RUNNER_TEMP || require("node:os").tmpdir();
  const repos = input("repos", { env })
    .split(/[\s,]+/)
    .filter(Boolean)
    .join(",");
  const options = {
    STS_BROKER_URL: input("url", { required: true, env }),
    STS_WORKSPACE: input("workspace", { required: true, env }),
    STS_POLICY: input("policy", { env }),
    STS_REPOS: repos,
    STS_AUDIENCE: input("audience", { env }),
    STS_TOKEN_ENV: input("token-env", { env }),
    // Under the job's temp directory, which the runner empties after the job: no token cache
    // outlives it, even on a self-hosted runner.
    STS_STATE_DIR: path.join(runnerTemp, "sts-client", "state"),
  };
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v));
}

/** The release asset for this runner, or an error naming what to do instead. */
function assetFor(platform = process.platform, arch = process.arch) {
  const asset = ASSETS[`${platform}-${arch}`];
  if (!asset) {
    throw new Error(
      `no sts-client release binary for ${platform}/${arch}; build it and pass \`client-path\``,
    );
  }
  return asset;
}

/** Where the release assets are: the `download-url` input, else this action's own release. */
function downloadBase(env = process.env) {
  const given = input("download-url", { env });
  if (given) {
    return given.replace(/\/+$/, "");
  }
  const version = input("version", { env }) || env.GITHUB_ACTION_REF;
  const repository = env.GITHUB_ACTION_REPOSITORY;
  const server = env.GITHUB_SERVER_URL || "https://github.com";
  if (!version || !repository) {
    throw new Error("cannot tell which release to download: set `version` or `client-path`");
  }
  return `${server}/${repository}/releases/download/${version}`;
}

/** The checksum `sums` (sha256sum output) gives `asset`, or an error. */
function expectedSha256(sums, asset) {
  for (const line of sums.split(/\r?\n/)) {
    const match = line.trim().match(/^([0-9a-f]{64})\s+\*?(.+)$/i);
    if (match && match[2] === asset) {
      return match[1].toLowerCase();
    }
  }
  throw new Error(`${CHECKSUMS} lists no checksum for ${asset}`);
}

async function download(url) {
  const response = await fetch(url, { redirect: "follow" });
  if (!response.ok) {
    throw new Error(`GET ${url}: HTTP ${response.status}`);
  }
  return Buffer.from(await response.arrayBuffer());
}

/**
 * Download the asset for this runner into `dir` and check it against the published checksum
 * before it is made executable; returns its path. A mismatch (a tampered or truncated download)
 * leaves nothing behind.
 */
async function installClient(base, dir, asset = assetFor()) {
  let sums;
  try {
    sums = (await download(`${base}/${CHECKSUMS}`)).toString("utf8");
  } catch (error) {
    // Used at a branch rather than a release tag, there is no such release.
    throw new Error(`${error.message} (is there a release there? set \`version\` or \`client-path\`)`);
  }
  const expected = expectedSha256(sums, asset);
  const binary = await download(`${base}/${asset}`);
  const actual = crypto.createHash("sha256").update(binary).digest("hex");
  if (actual !== expected) {
    throw new Error(`checksum mismatch for ${asset}: expected ${expected}, got ${actual}`);
  }
  fs.mkdirSync(dir, { recursive: true });
  const target = path.join(dir, "sts-client");
  fs.writeFileSync(target, binary, { mode: 0o755 });
  return target;
}

/**
 * Run the client with `args` and `options` in its environment; stderr goes to the log (the
 * client's notes, warnings and own masks), stdout is returned. Throws on a non-zero exit.
 */
function runClient(client, args, options, env = process.env) {
  const result = spawnSync(client, args, {
    env: { ...env, ...options },
    stdio: ["ignore", "pipe", "inherit"],
    encoding: "utf8",
    maxBuffer: 16 * 1024 * 1024,
  });
  if (result.error) {
    throw new Error(`cannot run ${client}: ${result.error.message}`);
  }
  if (result.status !== 0) {
    throw new Error(`sts-client ${args[0]} exited with status ${result.status ?? result.signal}`);
  }
  return result.stdout;
}

module.exports = {
  ASSETS,
  CHECKSUMS,
  STATE_CLIENT,
  STATE_ENV,
  appendCommandFile,
  assetFor,
  clientEnv,
  downloadBase,
  expectedSha256,
  input,
  installClient,
  mask,
  requireFile,
  runClient,
  secretsIn,
};
