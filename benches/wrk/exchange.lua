-- wrk script: POST /api/v1/auth/github-oidc, each request with its own single-use OIDC token.
-- Thread k reads the tokens of `$WRK_TOKENS.k` (one per line), so no token is sent twice; a
-- thread that runs out sends an empty token, which the broker refuses (counted as non-2xx).

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  tokens = {}
  for line in io.lines(os.getenv("WRK_TOKENS") .. "." .. id) do
    tokens[#tokens + 1] = line
  end
  next_token = 1
  available = #tokens
  refused = 0
  workspace = os.getenv("WRK_WORKSPACE") or "acme"
end

function request()
  local token = tokens[next_token] or ""
  next_token = next_token + 1
  local body = '{"token":"' .. token .. '","workspaceId":"' .. workspace .. '"}'
  return wrk.format("POST", "/api/v1/auth/github-oidc", { ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  if status ~= 200 then
    refused = refused + 1
  end
end

function done(summary, latency, requests)
  local refused_total, sent = 0, 0
  for _, thread in ipairs(threads) do
    refused_total = refused_total + thread:get("refused")
    sent = sent + thread:get("available")
  end
  local ok = summary.requests - refused_total
  io.write(string.format("exchange ok: %d of %d (%.1f ok/s), tokens available %d\n",
    ok, summary.requests, ok / (summary.duration / 1e6), sent))
  for _, p in ipairs({ 50, 90, 99 }) do
    io.write(string.format("exchange p%d: %.2f ms\n", p, latency:percentile(p) / 1000))
  end
  io.write(string.format("exchange max: %.2f ms\n", latency.max / 1000))
  if summary.requests >= sent then
    io.write("exchange: the tokens ran out before the time did, so ok/s is capped by their count\n")
  end
end
