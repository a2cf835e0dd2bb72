// Post step: revoke what the main step minted (`sts-client logout`), however the job went. A
// failure is a warning, not a failed job: the tokens expire within the hour anyway.
"use strict";

const lib = require("./lib.js");

function post(env = process.env) {
  const client = env[`STATE_${lib.STATE_CLIENT}`];
  if (!client) {
    console.log("nothing to revoke: the main step did not get as far as installing sts-client");
    return;
  }
  const options = JSON.parse(env[`STATE_${lib.STATE_ENV}`] || "{}");
  lib.runClient(client, ["logout"], options, env);
  console.log("tokens revoked");
}

try {
  post();
} catch (error) {
  process.stdout.write(`::warning::sts-broker logout failed: ${error.message}\n`);
}
