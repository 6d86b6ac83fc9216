-- POST the webhook mix: templates and deck come from the Lua file named by BENCH_WRK_DATA,
-- written by bench/wrkrun.py from bench/mix.py, so wrk sends exactly what the Python client
-- would. Each thread varies the ids with its own prefix; 200s are counted per thread.
local data = dofile(os.getenv("BENCH_WRK_DATA"))
local templates, deck, prefix = data.templates, data.deck, data.prefix
local threads = {}
local counter = 0
-- globals, so that setup() can set them and done() can read them through thread:get/set
ok, other, tid = 0, 0, "0"

function setup(thread)
  thread:set("tid", tostring(#threads + 1))
  table.insert(threads, thread)
end

function request()
  local j = counter % #deck + 1
  local passes = math.floor(counter / #deck)
  local slot = deck[j]
  local t = templates[slot[1]]
  local round = passes * slot[3] + slot[2]
  local sfx = prefix .. tid .. string.format("%07d", round)
  counter = counter + 1
  return wrk.format("POST", t.path, t.headers, table.concat(t.parts, sfx))
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
