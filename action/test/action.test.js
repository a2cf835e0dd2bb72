// The action's scripts against a fake runner: temp GITHUB_ENV / GITHUB_PATH / GITHUB_STATE
// files, a fake sts-client that records how it was called, and a local release server.
//
//   node --test action/test/
"use strict";

const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const fs = require("node:fs");
const http = require("node:http");
const os = require("node:os");
const path = require("node:path");
const { spawn } = require("node:child_process");
const { test } = require("node:test");
const lib = require("../lib.js");

const ACTION = path.resolve(__dirname, "..");
const TOKEN = "ghs_fakeTokenForTheActionTests0123456789";

/** A fake sts-client: logs its argv and STS_* environment, prints what `env --format json` would. */
const FAKE_CLIENT = `#!/usr/bin/env node
const fs = require("node:fs");
const sts = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith("STS_")));
fs.appendFileSync(process.env.FAKE_LOG, JSON.stringify({ args: process.argv.slice(2), sts }) + "\\n");
if (process.env.FAKE_FAIL) { process.stderr.write("error: broker unreachable\\n"); process.exit(1); }
if (process.argv[2] === "env") {
  process.stdout.write(JSON.stringify({
    GIT_CONFIG_COUNT: "1",
    GIT_CONFIG_KEY_0: "url.https://x-access-token:${TOKEN}@github.com/acme/.insteadOf",
    GIT_CONFIG_VALUE_0: "https://github.com/acme/",
    ATMOS_PRO_GITHUB_TOKEN: "${TOKEN}",
  }));
}
`;

/** A fresh fake runner: its temp dir, command files, and the fake client. */
function runner() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sts-action-"));
  const files = {};
  for (const name of ["GITHUB_ENV", "GITHUB_PATH", "GITHUB_STATE"]) {
    files[name] = path.join(dir, name.toLowerCase());
    fs.writeFileSync(files[name], "");
  }
  const client = path.join(dir, "fake-sts-client");
  fs.writeFileSync(client, FAKE_CLIENT, { mode: 0o755 });
  const env = {
    PATH: process.env.PATH,
    GITHUB_ACTIONS: "true",
    RUNNER_TEMP: path.join(dir, "runner-temp"),
    FAKE_LOG: path.join(dir, "calls.log"),
    INPUT_URL: "https://sts.example.com",
    INPUT_WORKSPACE: "acme",
    INPUT_REPOS: "acme/modules,\n acme/infra",
    ...files,
  };
  return { dir, client, env, files };
}

/** Run one of the action's scripts as the runner would; resolves with its exit code and output. */
function run(script, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ACTION, script)], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** Parse a command file written in the heredoc form into {name: value}. */
function readCommandFile(file) {
  const text = fs.readFileSync(file, "utf8");
  const values = {};
  const re = /^(.+?)<<(ghadelimiter_[0-9a-f-]+)\n([\s\S]*?)\n\2\n/gm;
  let consumed = 0;
  for (const m of text.matchAll(re)) {
    values[m[1]] = m[3];
    consumed += m[0].length;
  }
  assert.equal(consumed, text.length, `stray text in ${file}: ${text}`);
  return values;
}

function calls(env) {
  if (!fs.existsSync(env.FAKE_LOG)) return [];
  return fs
    .readFileSync(env.FAKE_LOG, "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
}

/** Serve `files` ({name: Buffer}) over HTTP on loopback for the length of `body`. */
async function withServer(files, body) {
  const server = http.createServer((req, res) => {
    const name = decodeURIComponent(req.url.split("/").pop());
    if (files[name]) {
      res.writeHead(200).end(files[name]);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  try {
    return await body(`http://127.0.0.1:${server.address().port}/releases/v9.9.9`);
  } finally {
    server.close();
  }
}

function sha256(buffer) {
  return crypto.createHash("sha256").update(buffer).digest("hex");
}

test("main logs in, masks the token before exporting it, and saves what post needs", async () => {
  const { env, client, files } = runner();
  env["INPUT_CLIENT-PATH"] = client;
  const result = await run("main.js", env);
  assert.equal(result.code, 0, result.stdout + result.stderr);

  const [call] = calls(env);
  assert.deepEqual(call.args, ["env", "--format", "json"]);
  assert.equal(call.sts.STS_BROKER_URL, "https://sts.example.com");
  assert.equal(call.sts.STS_WORKSPACE, "acme");
  assert.equal(call.sts.STS_REPOS, "acme/modules,acme/infra");
  assert.equal(call.sts.STS_STATE_DIR, path.join(env.RUNNER_TEMP, "sts-client", "state"));
  assert.equal(call.sts.STS_POLICY, undefined, "an empty input leaves the client's default");

  assert.match(result.stdout, new RegExp(`^::add-mask::${TOKEN}$`, "m"));
  const lines = result.stdout.split("\n");
  const maskLine = lines.findIndex((l) => l === `::add-mask::${TOKEN}`);
  assert.ok(
    lines.every((l, i) => i <= maskLine || !l.includes(TOKEN) || l.startsWith("::add-mask::")),
    "the token shows in the log unmasked",
  );

  const exported = readCommandFile(files.GITHUB_ENV);
  assert.equal(exported.ATMOS_PRO_GITHUB_TOKEN, TOKEN);
  assert.equal(exported.GIT_CONFIG_COUNT, "1");
  assert.match(exported.GIT_CONFIG_KEY_0, /x-access-token:/);
  assert.equal(exported.STS_BROKER_URL, "https://sts.example.com");
  assert.equal(exported.STS_WORKSPACE, "acme");
  assert.equal(fs.readFileSync(files.GITHUB_PATH, "utf8"), `${path.dirname(client)}\n`);

  const state = readCommandFile(files.GITHUB_STATE);
  assert.equal(state[lib.STATE_CLIENT], client);
  assert.equal(JSON.parse(state[lib.STATE_ENV]).STS_WORKSPACE, "acme");
});

test("post revokes with the client and options main saved", async () => {
  const { env, client } = runner();
  const options = { STS_BROKER_URL: "https://sts.example.com", STS_WORKSPACE: "acme" };
  env[`STATE_${lib.STATE_CLIENT}`] = client;
  env[`STATE_${lib.STATE_ENV}`] = JSON.stringify(options);
  const result = await run("post.js", env);
  assert.equal(result.code, 0, result.stdout + result.stderr);
  const [call] = calls(env);
  assert.deepEqual(call.args, ["logout"]);
  assert.equal(call.sts.STS_WORKSPACE, "acme");
  assert.match(result.stdout, /tokens revoked/);
});

test("post after a main that installed nothing does nothing, and a failed logout only warns", async () => {
  const { env, client } = runner();
  const nothing = await run("post.js", env);
  assert.equal(nothing.code, 0);
  assert.equal(calls(env).length, 0);

  env[`STATE_${lib.STATE_CLIENT}`] = client;
  env.FAKE_FAIL = "1";
  const failed = await run("post.js", env);
  assert.equal(failed.code, 0);
  assert.match(failed.stdout, /^::warning::sts-broker logout failed: sts-client logout exited with status 1/m);
});

test("main fails the step with the client's status and exports nothing when login fails", async () => {
  const { env, client, files } = runner();
  env["INPUT_CLIENT-PATH"] = client;
  env.FAKE_FAIL = "1";
  const result = await run("main.js", env);
  assert.equal(result.code, 1);
  assert.match(result.stdout, /^::error::sts-broker login failed: sts-client env exited with status 1/m);
  assert.match(result.stderr, /broker unreachable/);
  assert.equal(fs.readFileSync(files.GITHUB_ENV, "utf8"), "");
  // Saved anyway: post still runs logout for whatever a half-done login left behind.
  assert.equal(readCommandFile(files.GITHUB_STATE)[lib.STATE_CLIENT], client);
});

test("main without url or workspace names the missing input", async () => {
  const { env } = runner();
  delete env.INPUT_WORKSPACE;
  const result = await run("main.js", env);
  assert.equal(result.code, 1);
  assert.match(result.stdout, /input `workspace` is required/);
});

test("main downloads the release binary for this runner and checks its SHA-256", async () => {
  const { env, files } = runner();
  const binary = Buffer.from(FAKE_CLIENT);
  const asset = lib.assetFor();
  const sums = `${sha256(Buffer.from("other"))}  sts-client-other\n${sha256(binary)}  ${asset}\n`;
  await withServer({ [asset]: binary, [lib.CHECKSUMS]: Buffer.from(sums) }, async (base) => {
    env["INPUT_DOWNLOAD-URL"] = `${base}/`;
    const result = await run("main.js", env);
    assert.equal(result.code, 0, result.stdout + result.stderr);
  });
  const installed = path.join(env.RUNNER_TEMP, "sts-client", "bin", "sts-client");
  assert.equal(fs.statSync(installed).mode & 0o777, 0o755);
  assert.equal(calls(env)[0].args[0], "env", "the downloaded client was run");
  assert.equal(fs.readFileSync(files.GITHUB_PATH, "utf8"), `${path.dirname(installed)}\n`);
});

test("a download whose checksum does not match is refused and never run", async () => {
  const { env, files } = runner();
  const asset = lib.assetFor();
  const sums = `${sha256(Buffer.from("the published build"))}  ${asset}\n`;
  await withServer(
    { [asset]: Buffer.from(FAKE_CLIENT), [lib.CHECKSUMS]: Buffer.from(sums) },
    async (base) => {
      env["INPUT_DOWNLOAD-URL"] = base;
      const result = await run("main.js", env);
      assert.equal(result.code, 1);
      assert.match(result.stdout, /^::error::.*checksum mismatch for sts-client-/m);
    },
  );
  assert.equal(fs.existsSync(path.join(env.RUNNER_TEMP, "sts-client", "bin", "sts-client")), false);
  assert.equal(calls(env).length, 0);
  assert.equal(fs.readFileSync(files.GITHUB_ENV, "utf8"), "");
});

test("a release that is not there says what to set", async () => {
  const { env } = runner();
  await withServer({}, async (base) => {
    env["INPUT_DOWNLOAD-URL"] = base;
    const result = await run("main.js", env);
    assert.equal(result.code, 1);
    assert.match(result.stdout, /^::error::.*SHA256SUMS: HTTP 404 \(is there a release there\? set `version` or `client-path`\)/m);
  });
});

test("the release location defaults to this action's repository at its ref", () => {
  const env = {
    GITHUB_ACTION_REPOSITORY: "acme/sts-broker",
    GITHUB_ACTION_REF: "v1.2.3",
    GITHUB_SERVER_URL: "https://github.com",
  };
  assert.equal(
    lib.downloadBase(env),
    "https://github.com/acme/sts-broker/releases/download/v1.2.3",
  );
  assert.equal(
    lib.downloadBase({ ...env, INPUT_VERSION: "v2.0.0" }),
    "https://github.com/acme/sts-broker/releases/download/v2.0.0",
  );
  assert.throws(() => lib.downloadBase({}), /set `version` or `client-path`/);
});

test("only linux x64 and arm64 have release binaries; others are told to pass client-path", () => {
  assert.equal(lib.assetFor("linux", "x64"), "sts-client-x86_64-unknown-linux-musl");
  assert.equal(lib.assetFor("linux", "arm64"), "sts-client-aarch64-unknown-linux-musl");
  assert.throws(() => lib.assetFor("darwin", "arm64"), /client-path/);
});

test("secrets are the tokens in git rewrites and token-named variables, nothing else", () => {
  const secrets = lib.secretsIn({
    GIT_CONFIG_COUNT: "2",
    GIT_CONFIG_KEY_0: "url.https://x-access-token:ghs_one@github.com/acme/.insteadOf",
    GIT_CONFIG_VALUE_0: "https://github.com/acme/",
    GIT_CONFIG_KEY_1: "url.https://x-access-token:ghs_two@github.com/labs/.insteadOf",
    GH_TOKEN_ACME: "ghs_one",
  });
  assert.deepEqual(secrets.sort(), ["ghs_one", "ghs_two"]);
});

test("a command-file value with newlines cannot add a variable", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sts-action-"));
  const file = path.join(dir, "env");
  lib.appendCommandFile(file, "A", "one\nB=injected");
  assert.deepEqual(readCommandFile(file), { A: "one\nB=injected" });
  assert.throws(() => lib.appendCommandFile(undefined, "A", "x"), /not running in GitHub Actions/);
});

test("action.yml runs main.js and post.js on node24 and declares every input the scripts read", () => {
  const metadata = fs.readFileSync(path.join(ACTION, "..", "action.yml"), "utf8");
  assert.match(metadata, /^ {2}using: node24$/m);
  assert.match(metadata, /^ {2}main: action\/main\.js$/m);
  assert.match(metadata, /^ {2}post: action\/post\.js$/m);
  const declared = [...metadata.matchAll(/^ {2}([a-z-]+):\n {4}description:/gm)].map((m) => m[1]);
  const scripts = ["lib.js", "main.js"].map((f) => fs.readFileSync(path.join(ACTION, f), "utf8"));
  const read = new Set(scripts.flatMap((s) => [...s.matchAll(/input\("([a-z-]+)"/g)].map((m) => m[1])));
  assert.deepEqual([...read].sort(), [...declared].sort());
  for (const required of ["url", "workspace"]) {
    assert.match(metadata, new RegExp(`^ {2}${required}:\\n {4}description: .*\\n {4}required: true$`, "m"));
  }
});
