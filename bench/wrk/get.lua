-- GET the paths listed in the file named by BENCH_WRK_PATHS, in turn, with the API key.
local paths = {}
for line in io.lines(os.getenv("BENCH_WRK_PATHS")) do
  if #line > 0 then table.insert(paths, line) end
end
local auth = os.getenv("BENCH_WRK_AUTH")
local headers = {}
if auth and #auth > 0 then headers["Authorization"] = auth end
local threads = {}
local counter = 0
-- globals, so that setup() can set them and done() can read them through thread:get/set
ok, other, offset = 0, 0, 0

function setup(thread)
  thread:set("offset", #threads * 7919)
  table.insert(threads, thread)
end

function init(args)
  counter = offset
end

function request()
  counter = counter + 1
  return wrk.format("GET", paths[counter % #paths + 1], headers)
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1 else other = other + 1 end
end

function done(summary, latency, requests)
  local ok_total, other_total = 0, 0
  for _, thread in ipairs(threads) do
    ok_total = ok_total + (thread:get("ok") or 0)
    other_total = other_total + (thread:get("other") or 0)
  end
  local e = summary.errors
  io.write(string.format("BENCH requests %d\n", summary.requests))
  io.write(string.format("BENCH ok %d\n", ok_total))
  io.write(string.format("BENCH non200 %d\n", other_total))
  io.write(string.format("BENCH duration_us %d\n", summary.duration))
  io.write(string.format("BENCH errors %d %d %d %d %d\n", e.connect, e.read, e.write, e.status, e.timeout))
  for _, q in ipairs({50, 90, 99}) do
    io.write(string.format("BENCH p%d_us %d\n", q, latency:percentile(q)))
  end
  io.write(string.format("BENCH max_us %d\n", latency.max))
end
