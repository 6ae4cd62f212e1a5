-- bench/webhooks --client wrk: wrk cycles through requests signed just before the run.
--
-- wrk ... -s bench/webhooks.lua URL -- REQUESTS_FILE THREADS
-- REQUESTS_FILE holds one request a line, tab-separated: webhook-id, webhook-timestamp,
-- webhook-signature, body (bench/webhooks.py writes it). Thread i of THREADS takes lines
-- i, i + THREADS, ... so no two threads send the same request; past its last line a thread
-- starts again from its first (a replay: the service answers it from its first answer, with
-- an Idempotent-Replay header, counted apart). done() prints one JSON line for bench/webhooks.py.

local threads = {}

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path, count = args[1], tonumber(args[2])
  requests, cursor, statuses = {}, 0, {}
  local n = 0
  for line in io.lines(path) do
    if n % count == index then
      local id, stamp, signature, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", nil, {
        ["Content-Type"] = "application/json",
        ["webhook-id"] = id,
        ["webhook-timestamp"] = stamp,
        ["webhook-signature"] = signature,
      }, body)
    end
    n = n + 1
  end
end

function request()
  cursor = cursor % #requests + 1
  return requests[cursor]
end

function response(status, headers, body)
  local answer = tostring(status)
  if headers["Idempotent-Replay"] then
    answer = answer .. " replay"
  end
  statuses[answer] = (statuses[answer] or 0) + 1
end

function done(summary, latency, requests)
  local answers = {}
  for _, thread in ipairs(threads) do
    for answer, count in pairs(thread:get("statuses")) do
      answers[answer] = (answers[answer] or 0) + count
    end
  end
  local parts = {}
  for answer, count in pairs(answers) do
    parts[#parts + 1] = string.format('"%s": %d', answer, count)
  end
  local errors = summary.errors
  io.write(string.format(
    '{"seconds": %.6f, "requests": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, "answers": {%s}}\n',
    summary.duration / 1e6, summary.requests,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    errors.connect, errors.read, errors.write, errors.timeout, table.concat(parts, ", ")
  ))
end
