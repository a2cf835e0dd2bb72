// Main step: install sts-client, log in, and export git's environment (tokens masked) and the
// client's options to the job's later steps; save what post.js needs to revoke.
"use strict";

const path = require("node:path");
const fs = require("node:fs");
const lib = require("./lib.js");

async function main(env = process.env) {
  const options = lib.clientEnv(env);
  const given = lib.input("client-path", { env });
  let client;
  if (given) {
    client = path.resolve(given);
    fs.accessSync(client, fs.constants.X_OK);
  } else {
    const dir = path.join(env.RUNNER_TEMP || require("node:os").tmpdir(), "sts-client", "bin");
    client = await lib.installClient(lib.downloadBase(env), dir);
    console.log(`installed sts-client in ${dir} (checksum verified)`);
  }
  // Saved before anything is minted, so the post step revokes even if a later line fails.
  lib.appendCommandFile(env.GITHUB_STATE, lib.STATE_CLIENT, client);
  lib.appendCommandFile(env.GITHUB_STATE, lib.STATE_ENV, JSON.stringify(options));

  const exported = JSON.parse(lib.runClient(client, ["env", "--format", "json"], options, env));
  // Masks first: the runner hides a value only in lines after its mask.
  for (const secret of lib.secretsIn(exported)) {
    lib.mask(secret);
  }
  // Later steps' `sts-client` (exec, git-credential, logout) reach the same broker and cache.
  for (const [name, value] of Object.entries({ ...options, ...exported })) {
    lib.appendCommandFile(env.GITHUB_ENV, name, value);
  }
  fs.appendFileSync(lib.requireFile(env.GITHUB_PATH, "PATH"), `${path.dirname(client)}\n`);
  console.log(`exported ${Object.keys(exported).length} variables for the next steps`);
}

main().catch((error) => {
  process.stdout.write(`::error::sts-broker login failed: ${error.message}\n`);
  process.exitCode = 1;
});
